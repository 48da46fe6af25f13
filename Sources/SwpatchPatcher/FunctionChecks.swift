import SwpatchProcess
import SwpatchSymbols
import SwpatchX86

/// The checks of one function and its replacement that read DWARF and machine code,
/// made before the target is stopped: a branch into the bytes the entry jump rewrites
/// (refused), a signature mismatch (refused unless forced), and what patching the entry
/// cannot reach (inlined copies, as notes).
struct FunctionChecks {
  let image: ProcessImage
  let process: TargetProcess
  let library: ElfFile
  let force: Bool

  /// The bytes from the function's start that a transaction may rewrite: the whole
  /// function, cut short at the first branch target past the jump site. A direct
  /// branch landing inside the 5-byte jump (from the function or its clones, such as
  /// its `.cold` part) is refused: it would land in the middle of the jump. A branch to
  /// the jump site itself simply takes the jump. Indirect jumps (tables) are not seen.
  func rewritableSize(of old: ResolvedSymbol) throws -> UInt64 {
    let code = process.peek(at: old.address, count: Int(min(old.size, 1 << 20)))
    guard !code.isEmpty else { return old.size }
    let site = X86.jumpSite(functionAt: old.address, code: code)
    var branches = BranchScan.directBranches(in: code, at: old.address)
    for clone in image.clones(of: old.name, in: old.object) {
      let cloneCode = process.peek(at: clone.address, count: Int(min(clone.size, 1 << 20)))
      branches += BranchScan.directBranches(in: cloneCode, at: clone.address)
    }
    let inside = branches.filter { $0.to > site && $0.to < old.address + old.size }
    if let bad = inside.first(where: { $0.to < site + UInt64(X86.nearJumpLength) }) {
      throw PatchError.branchIntoEntry(
        function: old.name, from: bad.from, to: bad.to, entry: old.address)
    }
    return inside.map(\.to).min().map { $0 - old.address } ?? old.size
  }

  /// Compares the DWARF prototypes of `old` and the replacement `new`: a mismatch is
  /// refused unless forced; the notes say what was forced or could not be checked.
  func signatureNotes(old: ResolvedSymbol, new: ElfSymbol) throws -> [String] {
    let oldPrototype = image.dwarfFunction(old)?.prototype
    let newPrototype = SymbolCache.shared.dwarf(of: library)?.function(at: new.value)?.prototype
    guard let oldPrototype, let newPrototype else {
      var missing: [String] = []
      if oldPrototype == nil { missing.append("\(old.name) in \(old.object)") }
      if newPrototype == nil { missing.append("\(new.name) in \(library.path)") }
      return [
        "signature not checked for \(old.name): no DWARF for \(missing.joined(separator: " nor for "))"
      ]
    }
    guard oldPrototype.hasSameSignature(as: newPrototype) else {
      guard force else {
        throw PatchError.signatureMismatch(old: "\(oldPrototype)", new: "\(newPrototype)")
      }
      return ["signature mismatch forced: \(oldPrototype) vs \(newPrototype)"]
    }
    return []
  }

  /// Inlined copies of `old` that keep the old code whatever the entry says.
  func inlineNotes(old: ResolvedSymbol) -> [String] {
    guard let sites = image.dwarfFunction(old)?.inlineSites, !sites.isEmpty else { return [] }
    let list = sites.map(\.description).joined(separator: ", ")
    let count = sites.count == 1 ? "1 site" : "\(sites.count) sites"
    return ["\(old.name) is inlined at \(count) (\(list)); those calls keep the old code"]
  }
}
