import SwpatchBase

/// A C type as DWARF describes it, kept as written (typedef names, qualifiers) for
/// printing, with a `canonical` form for comparing calling conventions.
public indirect enum DwarfType: Sendable, Equatable {
  case void
  /// A base type (`int`, `unsigned char`, `double`) and its size in bytes.
  case base(name: String, size: Int)
  case pointer(DwarfType)
  /// A C++ `&` or `&&`: passed as a pointer.
  case reference(DwarfType)
  /// `const`, `volatile`, `restrict` or `_Atomic` applied to a type.
  case qualified(String, DwarfType)
  case typedef(String, DwarfType)
  /// `struct`, `union`, `enum` or `class` and its name ("" when anonymous).
  case tagged(kind: String, name: String)
  case array(DwarfType)
  case function(returns: DwarfType, parameters: [DwarfType], variadic: Bool)
  /// A DWARF tag swpatch does not model, by its tag number; equal only to itself.
  case unknown(tag: Int)

  /// Typedefs resolved and qualifiers dropped, all the way down: what decides whether
  /// two functions take and return the same things. An anonymous struct keeps the name
  /// of the typedef that named it, so two different anonymous structs do not compare equal.
  public var canonical: DwarfType {
    switch self {
    case .typedef(let name, let type):
      let resolved = type.canonical
      if case .tagged(let kind, "") = resolved { return .tagged(kind: kind, name: name) }
      return resolved
    case .qualified(_, let type): return type.canonical
    case .pointer(let type): return .pointer(type.canonical)
    case .reference(let type): return .reference(type.canonical)
    case .array(let type): return .array(type.canonical)
    case .function(let returns, let parameters, let variadic):
      return .function(
        returns: returns.canonical, parameters: parameters.map(\.canonical), variadic: variadic)
    case .void, .base, .tagged, .unknown: return self
    }
  }

  /// C spelling: `const char *`, `size_t`, `struct point *`, `int (*)(int)`.
  public var rendered: String {
    switch self {
    case .void: return "void"
    case .base(let name, _): return name
    case .typedef(let name, _): return name
    case .tagged(let kind, let name): return name.isEmpty ? "\(kind) <anonymous>" : "\(kind) \(name)"
    case .qualified(let qualifier, let type):
      // `char * const` qualifies the pointer; `const char` the pointee.
      if case .pointer = type { return "\(type.rendered) \(qualifier)" }
      return "\(qualifier) \(type.rendered)"
    case .pointer(.function(let returns, let parameters, let variadic)):
      return "\(returns.rendered) (*)(\(Prototype.list(parameters, variadic: variadic)))"
    case .pointer(let type): return type.rendered.hasSuffix("*") ? "\(type.rendered)*" : "\(type.rendered) *"
    case .reference(let type): return "\(type.rendered) &"
    case .array(let type): return "\(type.rendered) []"
    case .function(let returns, let parameters, let variadic):
      return "\(returns.rendered) (\(Prototype.list(parameters, variadic: variadic)))"
    case .unknown(let tag): return "<DWARF tag \(hexAddress(UInt64(tag)))>"
    }
  }
}

/// A function's prototype read from DWARF: the name it was compiled under, its return
/// type and its parameters.
public struct Prototype: Sendable, Equatable, CustomStringConvertible {
  public let name: String
  public let returns: DwarfType
  public let parameters: [DwarfType]
  public let variadic: Bool
  /// The parameters' names in the source, one per parameter ("" where DWARF gives none);
  /// not part of the prototype's identity (`==` ignores them).
  public let parameterNames: [String]

  public init(
    name: String, returns: DwarfType, parameters: [DwarfType], variadic: Bool, parameterNames: [String] = []
  ) {
    self.name = name
    self.returns = returns
    self.parameters = parameters
    self.variadic = variadic
    self.parameterNames = parameterNames
  }

  public static func == (a: Prototype, b: Prototype) -> Bool {
    a.name == b.name && a.returns == b.returns && a.parameters == b.parameters && a.variadic == b.variadic
  }

  /// `int compute(int)`, `void reset(void)`, `int log(const char *, ...)`.
  public var description: String {
    let declarator = "\(name)(\(Self.list(parameters, variadic: variadic)))"
    // A function returning a function pointer: `double (*pick(void))(double)`.
    if case .pointer(.function(let r, let p, let v)) = returns {
      return "\(r.rendered) (*\(declarator))(\(Self.list(p, variadic: v)))"
    }
    return "\(returns.rendered) \(declarator)"
  }

  /// True when a caller of one can call the other: the same return type, parameter
  /// count, parameter types and variadic-ness, compared after resolving typedefs and
  /// dropping qualifiers (base types by name and size, pointers by what they point to,
  /// structs, unions and enums by name). Names of the functions do not matter.
  public func hasSameSignature(as other: Prototype) -> Bool {
    returns.canonical == other.returns.canonical && variadic == other.variadic
      && parameters.map(\.canonical) == other.parameters.map(\.canonical)
  }

  static func list(_ parameters: [DwarfType], variadic: Bool) -> String {
    if parameters.isEmpty { return variadic ? "..." : "void" }
    return (parameters.map(\.rendered) + (variadic ? ["..."] : [])).joined(separator: ", ")
  }
}

/// A place where a function was inlined into a caller: the caller's source file (base
/// name) and line of the call.
public struct InlineSite: Sendable, Equatable, Hashable, Comparable, CustomStringConvertible {
  public let file: String
  public let line: Int

  public init(file: String, line: Int) {
    self.file = file
    self.line = line
  }

  public var description: String { "\(file):\(line)" }

  public static func < (a: InlineSite, b: InlineSite) -> Bool {
    (a.file, a.line) < (b.file, b.line)
  }
}

/// What DWARF says about one function: its prototype and where it was inlined.
public struct DwarfFunction: Sendable, Equatable {
  public let prototype: Prototype
  /// Call sites that hold an inlined copy of the function, sorted by file and line.
  public let inlineSites: [InlineSite]
  /// The source file that defines the function (`DW_AT_decl_file`, as DWARF names it,
  /// usually a full path), else its compile unit's name; nil when DWARF gives neither.
  public var file: String? = nil
  /// `DW_AT_decl_line`; nil when only the compile unit is known.
  public var line: Int? = nil

  /// Whether `name` names `file`: the same path, its basename, or a suffix of it that
  /// starts at a folder boundary (`src/bytes_methods.c`); or a full path that ends in
  /// the relative path DWARF records (`/build/proj/src/x.c` for `src/x.c`).
  public func isDefined(in name: String) -> Bool {
    guard let file, !name.isEmpty else { return false }
    let relative = file.hasPrefix("./") ? String(file.dropFirst(2)) : file
    return file == name || file.hasSuffix("/" + name)
      || (!relative.hasPrefix("/") && name.hasSuffix("/" + relative))
  }
}
