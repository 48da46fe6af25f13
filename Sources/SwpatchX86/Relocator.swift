import CCapstone
import SwpatchBase

/// The first instructions of a function, re-encoded to run at another address and
/// followed by a jump back to the rest of the function: what an entry jump overwrote,
/// made callable again (a replacement's `prev` at the bottom of a stack) and a place to
/// move a thread that was stopped inside those bytes.
public struct RelocatedPrologue: Sendable, Equatable {
  /// The code, to be written at `address`.
  public let bytes: [UInt8]
  public let address: UInt64
  /// How many bytes of the original were taken (whole instructions).
  public let copiedLength: Int
  /// Where the copy jumps back to: the first original instruction not copied.
  public let resumeAddress: UInt64
  /// For each copied instruction, its offset in the original and in `bytes`: where a
  /// thread stopped at an instruction boundary of the original goes in the copy. The
  /// last one maps the end of the copied bytes to the jump back.
  public let boundaries: [Boundary]
  /// Whether a copied instruction is a call: its return address then points into the
  /// copy, which must stay in place while any thread may still return there.
  public let hasCall: Bool

  public struct Boundary: Sendable, Equatable {
    public let original: Int
    public let relocated: Int
  }

  /// Where a thread whose pc is `pc`, inside the copied bytes at an instruction
  /// boundary, continues in the copy; nil when `pc` is not such a boundary.
  public func relocatedPC(for pc: UInt64, originalAt start: UInt64) -> UInt64? {
    guard pc >= start else { return nil }
    let offset = Int(pc - start)
    return boundaries.first { $0.original == offset }.map { address + UInt64($0.relocated) }
  }

  /// Where a thread whose pc is `pc`, at a boundary in the copy, continues in the
  /// original code at `start`; nil when `pc` is not such a boundary (inside an
  /// instruction the relocation added, such as the halves of an expanded branch).
  public func originalPC(for pc: UInt64, originalAt start: UInt64) -> UInt64? {
    guard pc >= address else { return nil }
    let offset = Int(pc - address)
    return boundaries.first { $0.relocated == offset }.map { start + UInt64($0.original) }
  }
}

/// Why a prologue cannot be moved. The caller refuses the operation with this reason.
public enum RelocationError: CodedError, Sendable, Equatable {
  public var code: String { "prologue_not_relocatable" }

  /// Capstone could not decode the bytes at this offset.
  case undecodable(offset: Int)
  /// An instruction whose meaning depends on where it is and that has no longer form
  /// to re-encode it with (`loop`, `jrcxz`, `xbegin`).
  case unsupported(instruction: String, offset: Int)
  /// A RIP-relative operand whose target is beyond ±2 GiB of the new address.
  case outOfReach(instruction: String, offset: Int)
  /// The code ended before `needed` bytes of whole instructions.
  case tooShort(available: Int, needed: Int)

  public var description: String {
    switch self {
    case .undecodable(let offset):
      return "the instruction at +\(offset) cannot be decoded"
    case .unsupported(let instruction, let offset):
      return "'\(instruction)' at +\(offset) cannot be moved (it has no long form)"
    case .outOfReach(let instruction, let offset):
      return "'\(instruction)' at +\(offset) addresses memory beyond ±2 GiB of the copy"
    case .tooShort(let available, let needed):
      return "only \(available) bytes of whole instructions where \(needed) are needed"
    }
  }
}

/// Moves the first instructions of a function (decoded with Capstone) to another
/// address: RIP-relative operands get new displacements, relative jumps, conditional
/// jumps and calls become their rel32 forms (or absolute ones out of reach), branches
/// between copied instructions keep pointing into the copy, and everything else is
/// copied as it is.
public enum Relocator {
  /// Relocates whole instructions of `code` (at `from`) covering at least `needed`
  /// bytes, for the copy to run at `to`.
  public static func relocate(
    _ code: [UInt8], from: UInt64, to: UInt64, covering needed: Int
  ) throws(RelocationError) -> RelocatedPrologue {
    let instructions = try decode(code, at: from, covering: needed)
    let copied = instructions.last.map { $0.offset + $0.bytes.count } ?? 0
    // Sizes depend on reach, reach on addresses, addresses on sizes: settle in passes.
    var layout = instructions.map { $0.bytes.count }
    for _ in 0..<4 {
      let next = try encode(instructions, layout: layout, from: from, to: to, copied: copied).sizes
      if next == layout { break }
      layout = next
    }
    let encoded = try encode(instructions, layout: layout, from: from, to: to, copied: copied)
    // Branches between copied instructions were aimed using `layout`: it must be final.
    guard encoded.sizes == layout else {
      throw .unsupported(instruction: "branches whose sizes do not settle", offset: 0)
    }
    var bytes = encoded.bytes
    let back = to + UInt64(bytes.count)
    bytes +=
      X86.nearJump(from: back, to: from + UInt64(copied)) ?? X86.absoluteJump(to: from + UInt64(copied))
    var boundaries: [RelocatedPrologue.Boundary] = []
    var position = 0
    for (instruction, size) in zip(instructions, layout) {
      boundaries.append(.init(original: instruction.offset, relocated: position))
      position += size
    }
    // A thread just past the last copied instruction (the `syscall` a restarted call
    // re-executes, two bytes back) continues at the jump back.
    boundaries.append(.init(original: copied, relocated: position))
    let hasCall = instructions.contains { if case .call = $0.branch { true } else { false } }
    return RelocatedPrologue(
      bytes: bytes, address: to, copiedLength: copied, resumeAddress: from + UInt64(copied),
      boundaries: boundaries, hasCall: hasCall)
  }

  /// One decoded instruction and what relocating it needs.
  struct Instruction {
    let offset: Int
    let bytes: [UInt8]
    let mnemonic: String
    /// Offset of a RIP-relative displacement in `bytes`, 0 when none.
    let ripDisplacement: Int
    let branch: Branch?
  }

  enum Branch {
    case jump(target: UInt64)
    case call(target: UInt64)
    case conditional(condition: UInt8, target: UInt64)
  }

  static func decode(_ code: [UInt8], at address: UInt64, covering needed: Int) throws(RelocationError)
    -> [Instruction]
  {
    var handle: csh = 0
    guard cs_open(CS_ARCH_X86, CS_MODE_64, &handle) == CS_ERR_OK else { throw .undecodable(offset: 0) }
    defer { cs_close(&handle) }
    cs_option(handle, CS_OPT_DETAIL, Int(CS_OPT_ON.rawValue))
    guard let insn = cs_malloc(handle) else { throw .undecodable(offset: 0) }
    defer { cs_free(insn, 1) }
    var found: [Instruction] = []
    var offset = 0
    while offset < needed {
      guard offset < code.count else { throw .tooShort(available: offset, needed: needed) }
      let decoded: Instruction? = code.withUnsafeBufferPointer { buffer in
        var cursor: UnsafePointer<UInt8>? = buffer.baseAddress! + offset
        var left = buffer.count - offset
        var pc = address + UInt64(offset)
        guard cs_disasm_iter(handle, &cursor, &left, &pc, insn) else { return nil }
        let size = Int(insn.pointee.size)
        let bytes = Array(code[offset..<offset + size])
        let mnemonic = withUnsafeBytes(of: insn.pointee.mnemonic) { raw in
          String(decoding: raw.prefix { $0 != 0 }, as: UTF8.self)
        }
        var target: UInt64 = 0
        let isBranch = swpatch_direct_branch_target(insn, &target) != 0
        return Instruction(
          offset: offset, bytes: bytes, mnemonic: mnemonic,
          ripDisplacement: Int(swpatch_rip_disp_offset(insn)),
          branch: isBranch ? classify(bytes, target: target) : nil)
      }
      guard let decoded else { throw .undecodable(offset: offset) }
      if decoded.branch == nil, swpatchIsUnmovableBranch(decoded.bytes) {
        throw .unsupported(instruction: decoded.mnemonic, offset: offset)
      }
      found.append(decoded)
      offset += decoded.bytes.count
    }
    return found
  }

  /// The opcode of a direct branch, past its prefixes (a `bnd` or branch-hint prefix).
  static func opcode(_ bytes: [UInt8]) -> ArraySlice<UInt8> {
    var i = 0
    while i < bytes.count, [0xf2, 0xf3, 0x2e, 0x3e, 0x66].contains(bytes[i]) { i += 1 }
    if i < bytes.count, bytes[i] & 0xf0 == 0x40 { i += 1 }  // REX
    return bytes[i...]
  }

  static func classify(_ bytes: [UInt8], target: UInt64) -> Branch? {
    let op = opcode(bytes)
    guard let first = op.first else { return nil }
    switch first {
    case 0xe9, 0xeb: return .jump(target: target)
    case 0xe8: return .call(target: target)
    case 0x70...0x7f: return .conditional(condition: first & 0x0f, target: target)
    case 0x0f where op.count > 1 && (0x80...0x8f).contains(op[op.startIndex + 1]):
      return .conditional(condition: op[op.startIndex + 1] & 0x0f, target: target)
    default: return nil
    }
  }

  /// `loop`, `loope`, `loopne`, `jrcxz` (rel8 only) and `xbegin` (its abort address).
  static func swpatchIsUnmovableBranch(_ bytes: [UInt8]) -> Bool {
    let op = opcode(bytes)
    guard let first = op.first else { return false }
    return (0xe0...0xe3).contains(first) || (first == 0xc7 && op.dropFirst().first == 0xf8)
  }

  /// The instructions encoded at `to` with the sizes in `layout` (for branch targets
  /// inside the copy); returns the bytes and the sizes this encoding actually needed.
  static func encode(
    _ instructions: [Instruction], layout: [Int], from: UInt64, to: UInt64, copied: Int
  ) throws(RelocationError) -> (bytes: [UInt8], sizes: [Int]) {
    var starts: [Int: UInt64] = [:]
    var position = to
    for (instruction, size) in zip(instructions, layout) {
      starts[instruction.offset] = position
      position += UInt64(size)
    }
    /// A branch target inside the copied bytes goes to its copy.
    func destination(_ target: UInt64) -> UInt64 {
      guard target >= from, target < from + UInt64(copied), let start = starts[Int(target - from)] else {
        return target
      }
      return start
    }
    var bytes: [UInt8] = []
    var sizes: [Int] = []
    for instruction in instructions {
      let here = to + UInt64(bytes.count)
      var out: [UInt8]
      switch instruction.branch {
      case .jump(let target):
        let goal = destination(target)
        out = X86.nearJump(from: here, to: goal) ?? X86.absoluteJump(to: goal)
      case .call(let target):
        if let near = rel32([0xe8], from: here, to: target) {
          out = near
        } else {
          // call [rip+2]; jmp over the address; .quad target: returns onto the jmp.
          out = [0xff, 0x15, 0x02, 0, 0, 0, 0xeb, 0x08] + X86.littleEndian(target)
        }
      case .conditional(let condition, let target):
        let goal = destination(target)
        if let near = rel32([0x0f, 0x80 | condition], from: here, to: goal) {
          out = near
        } else {
          // The inverse condition skips an absolute jump to the target.
          out = [0x70 | (condition ^ 1), UInt8(X86.absoluteJumpLength)] + X86.absoluteJump(to: goal)
        }
      case nil:
        out = instruction.bytes
        if instruction.ripDisplacement > 0 {
          let d = instruction.ripDisplacement
          let old = Int32(
            bitPattern: UInt32(out[d]) | UInt32(out[d + 1]) << 8 | UInt32(out[d + 2]) << 16
              | UInt32(out[d + 3]) << 24)
          let end = from + UInt64(instruction.offset + instruction.bytes.count)
          let absolute = UInt64(bitPattern: Int64(bitPattern: end) + Int64(old))
          let delta = Int64(bitPattern: absolute &- (here + UInt64(out.count)))
          guard let new = Int32(exactly: delta) else {
            throw .outOfReach(instruction: instruction.mnemonic, offset: instruction.offset)
          }
          out.replaceSubrange(d..<d + 4, with: X86.littleEndian(UInt32(bitPattern: new)))
        }
      }
      bytes += out
      sizes.append(out.count)
    }
    return (bytes, sizes)
  }

  /// `opcode rel32` at `from` reaching `to`, or nil beyond ±2 GiB.
  static func rel32(_ opcode: [UInt8], from: UInt64, to: UInt64) -> [UInt8]? {
    let end = from &+ UInt64(opcode.count + 4)
    guard let rel = Int32(exactly: Int64(bitPattern: to &- end)) else { return nil }
    return opcode + X86.littleEndian(UInt32(bitPattern: rel))
  }
}
