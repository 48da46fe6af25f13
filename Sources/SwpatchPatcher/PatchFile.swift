import FoundationEssentials
import Glibc
import SwpatchBase
import SwpatchProtocol

/// A patch file as the operator wrote it (docs/patch-format.md), validated strictly:
/// unknown keys, wrong types and empty lists are errors, so a typo never passes silently.
public struct PatchFile: Sendable, Equatable {
  /// One function to redirect: `old` in the target to `new` in the library.
  public struct Function: Sendable, Equatable {
    public var old: String
    public var new: String
    public var object: String?
    public var sympos: Int?
    /// The source file that defines `old` (a basename or path suffix, matched against
    /// DWARF): picks among same-named statics, and is checked against `sympos`.
    public var file: String?
    /// A function-pointer variable of the library that swpatch points at the version
    /// below this replacement in the func stack (the original at the bottom).
    public var prev: String?
  }

  /// Where one of the library's references to the target's own functions and variables
  /// binds, when its name alone is ambiguous (`externs`).
  public struct Extern: Sendable, Equatable {
    public var object: String?
    public var sympos: Int?

    public init(object: String? = nil, sympos: Int? = nil) {
      self.object = object
      self.sympos = sympos
    }
  }

  public var id: String
  /// Absolute path of the replacement library (relative paths are resolved against the
  /// patch file's folder).
  public var library: String
  public var functions: [Function]
  public var replace: Bool
  public var requires: [String]
  /// Build-id pins: object basename -> lowercase hex GNU build id. Each listed object
  /// must be loaded in the target with exactly that id, or the patch is refused.
  public var buildIDs: [String: String] = [:]
  /// Pins by symbol name: which definition of the target an undefined symbol of the
  /// library binds to (swpatch binds it, whether or not the loader would find the name).
  public var externs: [String: Extern] = [:]
  /// Path of the patch file itself, for messages.
  public var source: String

  /// The longest patch id: ids appear in every status line, audit record and message.
  public static let maxIDLength = DaemonProtocol.maxPatchIDLength
  /// The largest `sympos`: far above any real count of same-named local symbols.
  public static let maxSympos = 65535

  /// Reads and validates `path`.
  public static func load(path: String) throws(PatchFileError) -> PatchFile {
    guard let data = FileManager.default.contents(atPath: path) else {
      throw PatchFileError(path: path, problem: "cannot be read (does it exist?)")
    }
    let folder = PathText.deletingLastComponent(URL(fileURLWithPath: path).standardizedFileURL.path)
    return try parse(data, path: path, folder: folder)
  }

  /// Validates patch-file JSON; `folder` anchors a relative `library`.
  public static func parse(_ data: Data, path: String, folder: String) throws(PatchFileError)
    -> PatchFile
  {
    func fail(_ problem: String) -> PatchFileError { PatchFileError(path: path, problem: problem) }
    guard let json = try? JSONDecoder().decode(JSONValue.self, from: data) else {
      throw fail("is not valid JSON")
    }
    guard case .object(let top) = json else { throw fail("must be a JSON object") }
    if let key = DuplicateKeys.first(in: data) {
      throw fail("has the key '\(key)' twice; each key may appear once in an object")
    }
    try checkKeys(
      top, allowed: ["id", "library", "functions", "replace", "requires", "build_ids", "externs"], at: "",
      fail)
    let id = try string(top, "id", at: "", fail)
    guard !id.isEmpty, id.utf8.allSatisfy({ isASCIILetterOrDigit($0) || "._-".utf8.contains($0) }) else {
      throw fail("'id' must be letters, digits, '.', '_' or '-' (got \"\(id)\")")
    }
    guard id.count <= maxIDLength else {
      throw fail("'id' is \(id.count) characters long; at most \(maxIDLength) are allowed")
    }
    var library = try string(top, "library", at: "", fail)
    if !library.hasPrefix("/") { library = PathText.appending(folder, library) }
    library = URL(fileURLWithPath: library).standardizedFileURL.path
    guard let list = top["functions"] else { throw fail("is missing 'functions'") }
    guard case .array(let items) = list else { throw fail("'functions' must be an array") }
    guard !items.isEmpty else { throw fail("'functions' must not be empty") }
    var functions: [Function] = []
    for (i, item) in items.enumerated() {
      let at = "functions[\(i)]."
      guard case .object(let entry) = item else { throw fail("functions[\(i)] must be an object") }
      try checkKeys(entry, allowed: ["old", "new", "object", "sympos", "file", "prev"], at: at, fail)
      var function = Function(
        old: try string(entry, "old", at: at, fail), new: try string(entry, "new", at: at, fail))
      if entry["object"] != nil { function.object = try string(entry, "object", at: at, fail) }
      if let value = entry["sympos"] { function.sympos = try sympos(value, at: at, fail) }
      if entry["file"] != nil { function.file = try string(entry, "file", at: at, fail) }
      if entry["prev"] != nil { function.prev = try string(entry, "prev", at: at, fail) }
      functions.append(function)
    }
    var replace = false
    if let value = top["replace"] {
      guard case .bool(let flag) = value else { throw fail("'replace' must be true or false") }
      replace = flag
    }
    var requires: [String] = []
    if let value = top["requires"] {
      guard case .array(let ids) = value else { throw fail("'requires' must be an array of patch ids") }
      for entry in ids {
        guard case .string(let id) = entry, !id.isEmpty, id.count <= maxIDLength else {
          throw fail("'requires' must be an array of patch ids (each at most \(maxIDLength) characters)")
        }
        requires.append(id)
      }
      guard !requires.isEmpty else { throw fail("'requires' must not be empty (omit it instead)") }
    }
    var buildIDs: [String: String] = [:]
    if let value = top["build_ids"] {
      let shape = "'build_ids' must be an object mapping object names to lowercase hex build ids"
      guard case .object(let pins) = value else { throw fail(shape) }
      guard !pins.isEmpty else { throw fail("'build_ids' must not be empty (omit it instead)") }
      for name in pins.keys.sorted() {
        guard !name.isEmpty, case .string(let hex) = pins[name]! else { throw fail(shape) }
        guard !hex.isEmpty, hex.utf8.count % 2 == 0,
          hex.utf8.allSatisfy({
            ("0"..."9").contains(Character(UnicodeScalar($0)))
              || ("a"..."f").contains(Character(UnicodeScalar($0)))
          })
        else {
          throw fail("'build_ids.\(name)' must be lowercase hex (got \"\(hex)\")")
        }
        buildIDs[name] = hex
      }
    }
    var externs: [String: Extern] = [:]
    if let value = top["externs"] {
      let shape = "'externs' must be an object mapping symbol names to {\"object\", \"sympos\"}"
      guard case .object(let pins) = value else { throw fail(shape) }
      guard !pins.isEmpty else { throw fail("'externs' must not be empty (omit it instead)") }
      for name in pins.keys.sorted() {
        let at = "externs.\(name)."
        guard !name.isEmpty, case .object(let entry) = pins[name]! else { throw fail(shape) }
        try checkKeys(entry, allowed: ["object", "sympos"], at: at, fail)
        guard !entry.isEmpty else {
          throw fail("'externs.\(name)' must give 'object', 'sympos' or both")
        }
        var pin = Extern()
        if entry["object"] != nil { pin.object = try string(entry, "object", at: at, fail) }
        if let value = entry["sympos"] { pin.sympos = try sympos(value, at: at, fail) }
        externs[name] = pin
      }
    }
    return PatchFile(
      id: id, library: library, functions: functions, replace: replace, requires: requires,
      buildIDs: buildIDs, externs: externs, source: path)
  }

  /// A `sympos`: range first, then an exact conversion (2^63-1 arrives as the Double
  /// 2^63, which no Int holds).
  private static func sympos(_ value: JSONValue, at: String, _ fail: (String) -> PatchFileError)
    throws(PatchFileError) -> Int
  {
    guard case .number(let number) = value, number >= 1, number <= Double(maxSympos),
      let pos = Int(exactly: number)
    else {
      throw fail("'\(at)sympos' must be an integer between 1 and \(maxSympos)")
    }
    return pos
  }

  private static func checkKeys(
    _ object: [String: JSONValue], allowed: [String], at: String, _ fail: (String) -> PatchFileError
  ) throws(PatchFileError) {
    for key in object.keys.sorted() where !allowed.contains(key) {
      throw fail("unknown key '\(at)\(key)' (allowed: \(allowed.joined(separator: ", ")))")
    }
  }

  private static func string(
    _ object: [String: JSONValue], _ key: String, at: String, _ fail: (String) -> PatchFileError
  ) throws(PatchFileError) -> String {
    guard let value = object[key] else { throw fail("is missing '\(at)\(key)'") }
    guard case .string(let text) = value else { throw fail("'\(at)\(key)' must be a string") }
    guard !text.isEmpty else { throw fail("'\(at)\(key)' must not be empty") }
    return text
  }

}

/// A patch file that cannot be used, and why.
public struct PatchFileError: CodedError, Sendable {
  public var code: String { "bad_patch_file" }

  public let path: String
  public let problem: String

  public init(path: String, problem: String) {
    self.path = path
    self.problem = problem
  }

  public var description: String {
    "patch file \(path) \(problem); see docs/patch-format.md"
  }
}

/// Any JSON value, decoded without loss of its type (a `true` never passes as `1`).
enum JSONValue: Decodable, Equatable {
  case null, bool(Bool), number(Double), string(String), array([JSONValue])
  case object([String: JSONValue])

  init(from decoder: Decoder) throws {
    let container = try decoder.singleValueContainer()
    if container.decodeNil() {
      self = .null
    } else if let value = try? container.decode(Bool.self) {
      self = .bool(value)
    } else if let value = try? container.decode(Double.self) {
      self = .number(value)
    } else if let value = try? container.decode(String.self) {
      self = .string(value)
    } else if let value = try? container.decode([JSONValue].self) {
      self = .array(value)
    } else {
      self = .object(try container.decode([String: JSONValue].self))
    }
  }
}

private func isASCIILetterOrDigit(_ byte: UInt8) -> Bool {
  (UInt8(ascii: "a")...UInt8(ascii: "z")).contains(byte)
    || (UInt8(ascii: "A")...UInt8(ascii: "Z")).contains(byte)
    || (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(byte)
}
