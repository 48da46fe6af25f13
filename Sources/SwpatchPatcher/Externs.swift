import SwpatchBase
import SwpatchProtocol
import SwpatchSymbols

/// Where each undefined symbol of a patch library binds in one target, decided before
/// the target is touched: what the target's dynamic loader would find is left to it;
/// any other function or variable of the target (a `static` one, a hidden one, one of
/// an executable that exports nothing) is bound by swpatch, with the rules of `old`
/// and the patch file's `externs` pins, by rewriting the library's `.dynsym` in the
/// copy loaded into the target (`AbsoluteBinding`).
struct ExternBindings {
  /// What a reference binds to.
  enum Target: Equatable {
    /// The loader finds it (in `object`, when known).
    case loader(object: String?)
    /// swpatch binds it to a definition the loader cannot see.
    case swpatch(ResolvedSymbol)
    /// A weak reference nothing defines: NULL, by design.
    case nowhere
  }

  var bindings: [(symbol: UndefinedSymbol, target: Target)] = []
  var notes: [String] = []

  /// The `.dynsym` edits for what swpatch binds.
  var edits: [FileEdit] {
    AbsoluteBinding.edits(
      binding: bindings.compactMap { symbol, target in
        if case .swpatch(let resolved) = target { return (symbol, resolved.address) }
        return nil
      })
  }

  /// For the report.
  var lines: [OperationReport.ExternLine] {
    bindings.map { symbol, target in
      switch target {
      case .loader(let object):
        return .init(name: symbol.name, bindsTo: "loader", object: object, address: nil)
      case .swpatch(let resolved):
        return .init(
          name: symbol.name, bindsTo: "swpatch", object: resolved.object, address: Address(resolved.address))
      case .nowhere:
        return .init(name: symbol.name, bindsTo: "nowhere", object: nil, address: nil)
      }
    }
  }

  /// A patch library swpatch loaded earlier (a memfd of ours): it was loaded with
  /// `RTLD_LOCAL`, so the loader does not bind other objects to it, and its own
  /// statics are not the target's.
  static func isPatchLibrary(_ object: LoadedObject) -> Bool {
    object.path.hasPrefix("/memfd:" + Transaction.memfdPrefix)
  }

  /// Decides every undefined symbol of `library` in `image`; refuses one that binds
  /// nowhere (unless weak), an ambiguous one, and a pin the library does not reference.
  init(
    library: ElfFile, shownAs: String, pins: [String: PatchFile.Extern], replaced: [String],
    image: ProcessImage
  ) throws {
    let undefined = library.undefinedDynamicSymbols
    for name in pins.keys.sorted() where !undefined.contains(where: { $0.name == name }) {
      throw PatchError.externNotReferenced(name: name, library: shownAs)
    }
    let loadedNames = Set(image.objects.flatMap { [$0.name] + ($0.soname.map { [$0] } ?? []) })
    let unloadedNeeds = library.neededLibraries.filter { !loadedNames.contains($0) }
    for symbol in undefined {
      let name = symbol.name
      let target: Target
      if let pin = pins[name] {
        target = .swpatch(
          try Self.resolve(name, object: pin.object, sympos: pin.sympos, image: image, library: shownAs))
      } else if let exporter = image.exporter(of: name, excluding: Self.isPatchLibrary) {
        target = .loader(object: exporter.name)
      } else {
        do {
          target = .swpatch(try Self.resolve(name, object: nil, sympos: nil, image: image, library: shownAs))
        } catch PatchError.unresolvedExtern(_, _, let reason) {
          if symbol.isWeak {
            target = .nowhere
          } else if !unloadedNeeds.isEmpty {
            // The loader will load these with the library; what they export is not
            // read here, so the reference is left to the loader (and a failure there
            // is reported by dlopen, naming the library).
            target = .loader(object: nil)
            notes.append(
              "'\(name)' is not in the target; left to the loader, which loads \(unloadedNeeds.joined(separator: ", ")) with the library"
            )
          } else {
            throw PatchError.unresolvedExtern(name: name, library: shownAs, reason: reason)
          }
        }
      }
      bindings.append((symbol, target))
    }
    for name in Set(replaced).sorted() where undefined.contains(where: { $0.name == name }) {
      notes.append(
        "warning: the library references '\(name)', a function it replaces: called from its own replacement it reaches the patched entry, which jumps back into that replacement for ever; call the version below through `prev` instead (called from another replacement, it reaches the new version, as intended)"
      )
    }
  }

  /// What a failed `resolveReference` means for a library's reference.
  private static func externError(_ error: SymbolError, name: String, library: String) -> any Error {
    switch error {
    case .notFound(_, let searched):
      let list = searched.prefix(6).joined(separator: ", ") + (searched.count > 6 ? ", ..." : "")
      return PatchError.unresolvedExtern(
        name: name, library: library,
        reason: "no object exports it and none defines a function or variable of that name (searched \(list))"
      )
    case .ambiguous(_, let candidates):
      return PatchError.ambiguousExtern(
        name: name, library: library,
        candidates: candidates.map { "sympos \($0.sympos) at \(hexAddress($0.address)) in \($0.object)" }
          .joined(separator: ", "))
    case .ambiguousAcrossObjects(_, let objects):
      return PatchError.ambiguousExtern(
        name: name, library: library, candidates: "in \(objects.joined(separator: ", "))")
    default:
      return error
    }
  }

  /// `name` resolved as `old` is, among the target's objects other than patch libraries.
  private static func resolve(
    _ name: String, object: String?, sympos: Int?, image: ProcessImage, library: String
  ) throws -> ResolvedSymbol {
    let found: ResolvedSymbol
    do {
      found = try image.resolveReference(name, in: object, sympos: sympos, excluding: isPatchLibrary)
    } catch {
      throw Self.externError(error, name: name, library: library)
    }
    guard found.kind != .ifunc else {
      throw PatchError.unresolvedExtern(
        name: name, library: library,
        reason: "it is an IFUNC resolver in \(found.object), not the implementation the target uses")
    }
    return found
  }
}
