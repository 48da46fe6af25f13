import SwpatchBase

/// Why a function could not be found, or an object could not be used.
public enum SymbolError: Error, CustomStringConvertible, Sendable {
  case processGone(pid: Int32)
  case cannotOpen(path: String, reason: String)
  case badLibrary(path: String, reason: String)
  case notFound(name: String, searched: [String])
  case notInLibrary(name: String, library: String)
  case objectNotLoaded(object: String, loaded: [String])
  /// `object` names several loaded objects (by file name, soname or path).
  case ambiguousObject(object: String, candidates: [String])
  case ambiguousAcrossObjects(name: String, objects: [String])
  case ambiguous(name: String, candidates: [ResolvedSymbol])
  case symposOutOfRange(name: String, sympos: Int, count: Int)
  /// No definition of `name` comes from the source file `file` (DWARF's decl_file).
  case sourceFileNotFound(name: String, file: String, candidates: [String])
  /// `sympos` and `file` name different definitions.
  case sourceFileMismatch(name: String, file: String, sympos: Int, actual: String)
  case notAFunction(name: String, object: String, kind: String)
  /// libdwfl could not read the target's modules or threads, so stacks cannot be checked.
  case unwindFailed(pid: Int32, reason: String)
  /// Neither the object nor a debug file of it describes the function in DWARF, so its
  /// prototype is unknown.
  case noPrototype(name: String, object: String, path: String)

  public var description: String {
    switch self {
    case .processGone(let pid):
      return "no process with pid \(pid) (check the pid with `ps -p \(pid)`)"
    case .cannotOpen(let path, let reason):
      return "cannot open \(path): \(reason)"
    case .badLibrary(let path, let reason):
      return "library \(path) \(reason); build the patch library with `gcc -shared -fPIC` for x86-64"
    case .notFound(let name, let searched):
      let list = searched.prefix(6).joined(separator: ", ") + (searched.count > 6 ? ", ..." : "")
      return "function '\(name)' not found in the target (searched \(list)); check the name with `nm`"
    case .notInLibrary(let name, let library):
      return
        "function '\(name)' is not defined in the patch library \(library); check `new` against `nm -D \(library)`"
    case .objectNotLoaded(let object, let loaded):
      let list = loaded.prefix(8).joined(separator: ", ")
      return
        "object '\(object)' is not loaded in the target (loaded: \(list)); fix `object` in the patch file"
    case .ambiguousObject(let object, let candidates):
      return
        "object '\(object)' names several loaded objects (\(candidates.joined(separator: "; "))); set `object` to a full path"
    case .ambiguousAcrossObjects(let name, let objects):
      return
        "function '\(name)' is defined in several objects (\(objects.joined(separator: ", "))); set `object` in the patch file to one of them"
    case .ambiguous(let name, let candidates):
      let list = candidates.map {
        "sympos \($0.sympos) at \(hexAddress($0.address)) in \($0.object)"
          + ($0.source.map { " (\($0))" } ?? "")
      }.joined(separator: ", ")
      let how = candidates.contains { $0.source != nil } ? "`sympos` or `file`" : "`sympos`"
      return "function '\(name)' is ambiguous (\(list)); set \(how) in the patch file to pick one"
    case .symposOutOfRange(let name, let sympos, let count):
      return "sympos \(sympos) for '\(name)' is out of range: there are \(count) symbols of that name"
    case .sourceFileNotFound(let name, let file, let candidates):
      return
        "no definition of '\(name)' comes from a source file '\(file)' (\(candidates.joined(separator: "; "))); fix `file` in the patch file"
    case .sourceFileMismatch(let name, let file, let sympos, let actual):
      return
        "sympos \(sympos) of '\(name)' is defined in \(actual), not in '\(file)'; `sympos` and `file` must name the same function (give one of them)"
    case .notAFunction(let name, let object, let kind):
      return "'\(name)' in \(object) is \(kind), not a function; only functions can be patched"
    case .unwindFailed(let pid, let reason):
      return
        "cannot unwind the stacks of pid \(pid) (\(reason)); nothing was changed; use --consistency entry to patch without the stack check"
    case .noPrototype(let name, let object, let path):
      return
        "no DWARF prototype for '\(name)' in \(object): rebuild \(path) with -g, or install its debug symbols (Debian: the -dbgsym package of the package `dpkg -S \(path)` names, which installs under \(DebugFiles.root))"
    }
  }
}

extension SymbolError: CodedError {
  public var code: String {
    switch self {
    case .processGone: return "no_such_process"
    case .badLibrary, .cannotOpen: return "bad_library"
    case .notFound, .notInLibrary: return "symbol_not_found"
    case .objectNotLoaded: return "object_not_loaded"
    case .ambiguousObject: return "ambiguous_object"
    case .ambiguous, .ambiguousAcrossObjects, .symposOutOfRange: return "ambiguous_symbol"
    case .sourceFileNotFound: return "unknown_source_file"
    case .sourceFileMismatch: return "source_file_mismatch"
    case .notAFunction: return "not_a_function"
    case .unwindFailed: return "stack_unwind_failed"
    case .noPrototype: return "no_prototype"
    }
  }
}
