import CCapstone
import SwpatchBase

/// A direct jump or call found in decoded code: where it is and where it lands.
public struct DirectBranch: Sendable, Equatable, CustomStringConvertible {
  public let from: UInt64
  public let to: UInt64
  public init(from: UInt64, to: UInt64) {
    self.from = from
    self.to = to
  }
  public var description: String {
    "\(hexAddress(from)) -> \(hexAddress(to))"
  }
}

/// Decodes a function's machine code with Capstone to find the direct branches that
/// land inside bytes swpatch would overwrite. Writing a jump over an instruction
/// boundary that some branch targets makes that branch land mid-jump: garbage.
public enum BranchScan {
  /// Every direct jump or call in `code` (loaded at `address`), decoded linearly. A
  /// byte Capstone cannot decode is skipped, so one bad byte does not hide the rest.
  public static func directBranches(in code: [UInt8], at address: UInt64) -> [DirectBranch] {
    var handle: csh = 0
    guard cs_open(CS_ARCH_X86, CS_MODE_64, &handle) == CS_ERR_OK else { return [] }
    defer { cs_close(&handle) }
    cs_option(handle, CS_OPT_DETAIL, Int(CS_OPT_ON.rawValue))
    guard let insn = cs_malloc(handle) else { return [] }
    defer { cs_free(insn, 1) }
    var found: [DirectBranch] = []
    code.withUnsafeBufferPointer { buffer in
      guard let base = buffer.baseAddress else { return }
      var offset = 0
      while offset < buffer.count {
        var cursor: UnsafePointer<UInt8>? = base + offset
        var left = buffer.count - offset
        var pc = address + UInt64(offset)
        guard cs_disasm_iter(handle, &cursor, &left, &pc, insn) else {
          offset += 1
          continue
        }
        var target: UInt64 = 0
        if swpatch_direct_branch_target(insn, &target) != 0 {
          found.append(DirectBranch(from: insn.pointee.address, to: target))
        }
        offset += Int(insn.pointee.size)
      }
    }
    return found
  }

  /// The branches in `code` that land strictly inside `rewritten`: past its first byte
  /// (a branch to the jump site itself simply takes the new jump) and before its end.
  public static func branchesInto(
    _ rewritten: Range<UInt64>, code: [UInt8], at address: UInt64
  ) -> [DirectBranch] {
    directBranches(in: code, at: address).filter {
      $0.to > rewritten.lowerBound && $0.to < rewritten.upperBound
    }
  }
}
