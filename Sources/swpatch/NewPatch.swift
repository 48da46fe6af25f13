import ArgumentParser
import FoundationEssentials
import Glibc
import SwpatchBase
import SwpatchProcess
import SwpatchSymbols

struct New: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "new",
    abstract: "Write a starting patch for a function: C source, a Makefile and the patch file.",
    discussion: """
      Reads the function's prototype from DWARF (the object's, or its separate debug
      file's) in a running process or in a program or library file, the way `swpatch
      symbols` does: nothing is stopped and no daemon is asked. It writes, into
      --dir (default ./<function>-patch), <function>-fix.c: a replacement that wraps
      the original through `prev` (include/swpatch.h), a Makefile, and
      <function>-fix.json. Existing files are kept unless --force. Example:
        swpatch new 4242 compute
        cd compute-patch && make && swpatch attach 4242 compute-fix.json
      """)

  @Argument(help: "Pid of a running process, or the path of a program or library file.") var target: String
  @Argument(help: "The function to patch (a C identifier).") var function: String
  @Option(help: "The object that defines the function, as the patch file's `object` names it.")
  var object: String?
  @Option(help: "Which definition of the function in that object, as the patch file's `sympos`.")
  var sympos: Int?
  @Option(help: "Folder to write into (default: ./<function>-patch).") var dir: String?
  @Flag(help: "Overwrite files that exist.") var force = false
  @Flag(help: "Print machine-readable JSON: the paths written (see docs/cli.md).") var json = false

  func validate() throws {
    guard function.wholeMatch(of: /[A-Za-z_][A-Za-z0-9_]*/) != nil else {
      throw ValidationError("'\(function)' is not a C identifier; swpatch new writes C")
    }
    if let sympos, !(1...65535).contains(sympos) {
      throw ValidationError("--sympos must be an integer between 1 and 65535")
    }
  }

  func run() throws {
    try Output.run(json: json) {
      let (symbol, dwarf) = try find()
      guard let dwarf else {
        throw SymbolError.noPrototype(name: function, object: symbol.object, path: symbol.objectPath)
      }
      let include = PatchTemplate.includeDirectory()
      let template = PatchTemplate(
        function: function, prototype: dwarf.prototype, object: symbol.object,
        sympos: sympos ?? (symbol.sympos > 1 ? symbol.sympos : nil), source: symbol.objectPath,
        includeDirectory: include.path)
      let folder = absolute(dir ?? "\(function)-patch")
      let written = try template.write(into: folder, force: force)
      return NewPatchResult(
        function: function, object: symbol.object, prototype: dwarf.prototype.sourceDeclaration,
        directory: folder,
        source: written[0], makefile: written[1], patch: written[2], includeDirectory: include.path,
        notes: include.found
          ? []
          : ["swpatch.h was not found next to swpatch; install it (make install) or fix -I in the Makefile"])
    } text: { result in
      // Paths under the current directory are shown relative to it, as typed.
      let here = FileManager.default.currentDirectoryPath + "/"
      func shown(_ path: String) -> String {
        path.hasPrefix(here) ? String(path.dropFirst(here.count)) : path
      }
      var lines = [
        "wrote \(shown(result.source)), \(shown(result.makefile)), \(shown(result.patch))",
        "  \(result.prototype)  (\(result.object))",
      ]
      lines += result.notes.map { "  note: " + $0 }
      lines.append(
        "  next: edit \(shown(result.source)), run make in \(shown(result.directory)), "
          + "then swpatch attach PID \(shown(result.patch))")
      return lines.joined(separator: "\n")
    }
  }

  /// The function in a running process (`target` is a pid) or in a file.
  private func find() throws -> (ResolvedSymbol, DwarfFunction?) {
    do {
      if let pid = Int32(target), !FileManager.default.fileExists(atPath: target) {
        let image = try ProcessImage(pid: pid)
        let symbol = try image.resolve(function, in: object, sympos: sympos)
        return (symbol, image.dwarfFunction(symbol))
      }
      let found = try ObjectFile.function(function, at: absolute(target), objectName: object, sympos: sympos)
      return (found.symbol, found.dwarf)
    } catch {
      switch error {
      case .ambiguous, .ambiguousAcrossObjects: throw NewPatchError.ambiguous(error)
      default: throw error
      }
    }
  }
}

/// What `swpatch new` prints with `--json`.
struct NewPatchResult: Encodable {
  var function: String
  var object: String
  var prototype: String
  var directory: String
  var source: String
  var makefile: String
  var patch: String
  var includeDirectory: String
  var notes: [String]

  enum CodingKeys: String, CodingKey {
    case function, object, prototype, directory, source, makefile, patch, notes
    case includeDirectory = "include_dir"
  }
}

/// Why `swpatch new` wrote nothing.
enum NewPatchError: CodedError {
  case exists([String])
  case cannotWrite(path: String, reason: String)
  /// The symbols module's refusal, told in this verb's options (--object, --sympos)
  /// rather than the patch file's keys; the code stays the symbols module's.
  case ambiguous(SymbolError)

  var code: String {
    switch self {
    case .ambiguous(let error): return error.code
    case .exists: return "file_exists"
    case .cannotWrite: return "cannot_write"
    }
  }

  var description: String {
    switch self {
    case .exists(let paths):
      return
        "\(paths.joined(separator: ", ")) already exist\(paths.count == 1 ? "s" : ""); nothing was written; use --force to overwrite or --dir to write elsewhere"
    case .cannotWrite(let path, let reason):
      return "cannot write \(path): \(reason)"
    case .ambiguous(.ambiguous(let name, let candidates)):
      let list = candidates.map { "sympos \($0.sympos) at \(hexAddress($0.address))" }.joined(separator: ", ")
      return
        "function '\(name)' is defined \(candidates.count) times in \(candidates.first?.object ?? "the object") (\(list)); pick one with --sympos"
    case .ambiguous(.ambiguousAcrossObjects(let name, let objects)):
      return
        "function '\(name)' is defined in several objects (\(objects.joined(separator: ", "))); pick one with --object"
    case .ambiguous(let error):
      return "\(error)"
    }
  }
}

/// The three files of a starting patch for one function: pure text from the function's
/// DWARF prototype, written together or not at all.
struct PatchTemplate {
  var function: String
  var prototype: Prototype
  var object: String
  var sympos: Int?
  /// The file the prototype was read from, named in the C file's header comment.
  var source: String
  var includeDirectory: String

  var id: String { "\(function)-fix" }
  var sourceName: String { "\(function)-fix.c" }
  var libraryName: String { "lib\(function)-fix.so" }
  var patchName: String { "\(function)-fix.json" }

  /// The C file: the types the prototype needs, then the replacement wrapping `prev`.
  var cSource: String {
    let prev = "\(function)_prev"
    var returns = prototype.returns.rendered
    var lines = [
      "/* A starting patch for \(function), written by `swpatch new` from the DWARF of",
      " * \(source).",
      " *   original: \(prototype.sourceDeclaration)",
      " *   build:    make   (cc -fPIC -g -shared; see the Makefile)",
      " *   apply:    swpatch attach PID \(patchName)",
      " * Keep the prototype. Call the old code through \(prev), never as \(function)(): once",
      " * patched, \(function)'s entry jumps here, so that would recurse for ever. See",
      " * swpatch.h and docs/writing-patches.md. */",
      "#include <swpatch.h>",
    ]
    let declarations = prototype.cDeclarations
    if !declarations.isEmpty { lines += [""] + declarations }
    if prototype.returns.isFunctionPointer {
      // SWPATCH_REPLACE puts the return type before a declarator: name it first.
      returns = "\(function)_result"
      lines += ["", "typedef \(prototype.returns.declaration(returns));"]
    }
    let arguments = prototype.sourceParameterNames.joined(separator: ", ")
    let call = "\(prev)(\(arguments))"
    lines += ["", "SWPATCH_REPLACE(\(returns), \(function), \(prototype.namedParameterList)) {"]
    if prototype.variadic {
      lines.append(
        "#warning \"\(function) is variadic: its ... arguments are not passed on to \(prev); edit the body\"")
    }
    lines.append("  /* Your fix here; then the version below (the original, at first): */")
    lines.append(prototype.returns == .void ? "  \(call);" : "  return \(call);")
    lines.append("}")
    return lines.joined(separator: "\n") + "\n"
  }

  var makefile: String {
    """
    # Built as swpatch needs it: position-independent, shared, with DWARF (-g).
    \(libraryName): \(sourceName)
    \tcc -fPIC -g -shared -I\(includeDirectory) -o \(libraryName) \(sourceName)

    """
  }

  /// The patch file: the library relative to the patch file's folder, `object` always
  /// (the name was resolved in it), `sympos` when the object has several definitions.
  var patchFile: String {
    var entry = [
      #""old": \#(Self.quoted(function))"#, #""new": \#(Self.quoted(function + "_fix"))"#,
      #""prev": \#(Self.quoted(function + "_prev"))"#, #""object": \#(Self.quoted(object))"#,
    ]
    if let sympos { entry.append(#""sympos": \#(sympos)"#) }
    return """
      {
        "id": \(Self.quoted(id)),
        "library": \(Self.quoted(libraryName)),
        "functions": [
          { \(entry.joined(separator: ", ")) }
        ]
      }

      """
  }

  static func quoted(_ text: String) -> String {
    let data = (try? JSONEncoder().encode(text)) ?? Data("\"\"".utf8)
    return String(decoding: data, as: UTF8.self).replacing("\\/", with: "/")
  }

  /// Writes the C file, the Makefile and the patch file into `folder` (created if
  /// needed) and returns their paths; refuses before writing any if one exists, unless
  /// `force`.
  func write(into folder: String, force: Bool) throws -> [String] {
    let files = [(sourceName, cSource), ("Makefile", makefile), (patchName, patchFile)].map {
      (PathText.appending(folder, $0.0), $0.1)
    }
    let manager = FileManager.default
    let existing = files.map(\.0).filter { manager.fileExists(atPath: $0) }
    if !existing.isEmpty && !force { throw NewPatchError.exists(existing) }
    do {
      try manager.createDirectory(atPath: folder, withIntermediateDirectories: true)
    } catch {
      throw NewPatchError.cannotWrite(path: folder, reason: describe(writeError: error))
    }
    for (path, text) in files {
      do {
        try Data(text.utf8).write(to: URL(fileURLWithPath: path))
      } catch {
        throw NewPatchError.cannotWrite(path: path, reason: describe(writeError: error))
      }
    }
    return files.map(\.0)
  }

  /// Where swpatch.h is: `../include` next to the swpatch binary (an installed
  /// PREFIX/bin/swpatch), else the `include/` of a source tree the binary was built in,
  /// else the system's include folders; the install default when it is nowhere.
  static func includeDirectory(
    executable: URL? = TargetProcess.ownExecutable.map { URL(fileURLWithPath: $0) }
  ) -> (path: String, found: Bool) {
    var candidates: [URL] = []
    if var folder = executable?.resolvingSymlinksInPath().deletingLastPathComponent() {
      candidates.append(folder.deletingLastPathComponent().appendingPathComponent("include"))
      for _ in 0..<5 {
        folder = folder.deletingLastPathComponent()
        candidates.append(folder.appendingPathComponent("include"))
      }
    }
    candidates += ["/usr/local/include", "/usr/include"].map { URL(fileURLWithPath: $0) }
    for candidate in candidates
    where FileManager.default.fileExists(atPath: candidate.appendingPathComponent("swpatch.h").path) {
      return (candidate.standardizedFileURL.path, true)
    }
    return ("/usr/local/include", false)
  }
}

/// Why a file could not be written, in the system's words when it gave an errno.
private func describe(writeError error: any Error) -> String {
  if let cocoa = error as? CocoaError, let posix = cocoa.userInfo["NSUnderlyingError"] as? POSIXError {
    return String(cString: strerror(posix.code.rawValue))
  }
  return "\(error)"
}
