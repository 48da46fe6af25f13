/// The few x86-64 encodings swpatch writes into a target: entry jumps and trampoline
/// slots. Nothing here is decoded from the target except the `endbr64` check.
public enum X86 {
  /// `endbr64`: the landing pad of CET indirect-branch tracking.
  public static let endbr64: [UInt8] = [0xf3, 0x0f, 0x1e, 0xfa]
  public static let int3: UInt8 = 0xcc
  /// Length of `jmp rel32`.
  public static let nearJumpLength = 5
  /// Length of `jmp qword ptr [rip+0]` followed by its 8-byte absolute target.
  public static let absoluteJumpLength = 14

  /// `jmp rel32` placed at `from` that lands on `to`; nil when `to` is beyond ±2 GiB.
  public static func nearJump(from: UInt64, to: UInt64) -> [UInt8]? {
    let delta = Int64(bitPattern: to &- (from &+ 5))
    guard let rel = Int32(exactly: delta) else { return nil }
    return [0xe9] + littleEndian(UInt32(bitPattern: rel))
  }

  /// `jmp qword ptr [rip+0]; .quad to`: reaches anywhere, needs 14 bytes.
  public static func absoluteJump(to: UInt64) -> [UInt8] {
    [0xff, 0x25, 0, 0, 0, 0] + littleEndian(to)
  }

  /// True when the code starts with `endbr64`; the entry jump then goes after it so the
  /// function stays a valid indirect-branch target.
  public static func startsWithEndbr64(_ code: [UInt8]) -> Bool {
    code.count >= 4 && Array(code.prefix(4)) == endbr64
  }

  /// Where the entry jump goes for a function starting with `code` at `address`.
  public static func jumpSite(functionAt address: UInt64, code: [UInt8]) -> UInt64 {
    startsWithEndbr64(code) ? address + 4 : address
  }

  /// The 8 little-endian bytes read back as a value (0 unless exactly 8 bytes).
  public static func word(_ bytes: [UInt8]) -> UInt64 {
    bytes.count == 8 ? bytes.withUnsafeBytes { $0.loadUnaligned(as: UInt64.self) } : 0
  }

  static func littleEndian(_ value: UInt32) -> [UInt8] {
    withUnsafeBytes(of: value.littleEndian, Array.init)
  }

  static func littleEndian(_ value: UInt64) -> [UInt8] {
    withUnsafeBytes(of: value.littleEndian, Array.init)
  }
}

/// A trampoline slot: `endbr64; jmp qword ptr [rip+6]`, padding, and an aligned 8-byte
/// pointer cell holding the active replacement. Switching replacements is one aligned
/// store into the cell, so a caller sees the old or the new address, never a mix.
public enum TrampolineSlot {
  /// Slot size; slots are 32-byte aligned in their page.
  public static let size: UInt64 = 32
  /// Offset of the pointer cell within the slot (8-byte aligned).
  public static let cellOffset: UInt64 = 16

  /// The slot's bytes, with its cell pointing to `target`.
  public static func bytes(target: UInt64) -> [UInt8] {
    // jmp [rip+disp]: the next instruction is at offset 4 + 6 = 10, the cell at 16.
    let disp = UInt32(cellOffset - 10)
    var code = X86.endbr64 + [0xff, 0x25] + X86.littleEndian(disp)
    code += [UInt8](repeating: X86.int3, count: Int(cellOffset) - code.count)
    code += X86.littleEndian(target)
    code += [UInt8](repeating: X86.int3, count: Int(size) - code.count)
    return code
  }

  /// A freed slot: all int3, like unused page space, so a stray jump into it traps.
  public static let freed = [UInt8](repeating: X86.int3, count: Int(size))

  /// The 8 bytes stored into a cell to point it at `target`.
  public static func cell(target: UInt64) -> [UInt8] { X86.littleEndian(target) }
  /// What a cell's 8 bytes point to (0 unless exactly 8 bytes): `cell(target:)` read back.
  public static func target(ofCell bytes: [UInt8]) -> UInt64 { X86.word(bytes) }
}

/// The layout of a trampoline page: a header (an `int3`, then the code remote calls
/// return to, at most 63 bytes), then slots.
public enum TrampolinePageLayout {
  public static let size: UInt64 = 4096
  /// Offset of an `int3` guard.
  public static let trapOffset: UInt64 = 0
  /// Offset of the hijack stub (process control's `HijackStub`) that remote calls
  /// return to and remote system calls run from.
  public static let stubOffset: UInt64 = 1
  /// Room for the stub, up to the first slot.
  public static let stubRoom: UInt64 = 63
  /// Offset of the first slot.
  public static let firstSlotOffset: UInt64 = 64
  public static var slotCount: Int { Int((size - firstSlotOffset) / TrampolineSlot.size) }

  /// A fresh page: all `int3`, so a stray jump into unused space traps.
  public static func freshBytes() -> [UInt8] { [UInt8](repeating: X86.int3, count: Int(size)) }

  public static func slotAddress(page: UInt64, index: Int) -> UInt64 {
    page + firstSlotOffset + UInt64(index) * TrampolineSlot.size
  }
}
