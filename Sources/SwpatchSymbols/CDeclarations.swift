/// C source for a DWARF type or prototype, as a patch author writes it: declarations
/// with names (`int (*callback)(int)`, `char *const name`), and what must be declared
/// before a prototype compiles (`struct point;`, `#include <stddef.h>`, a typedef).
extension DwarfType {
  /// The C declaration of `declarator` with this type: `int x`, `const char *name`,
  /// `int (*callback)(int)`, `double (*pick(void))(double)`. An empty declarator gives
  /// the abstract type.
  public func declaration(_ declarator: String) -> String {
    switch self {
    case .pointer(let pointee):
      return pointee.declaration(Self.pointer(to: pointee, "*" + declarator))
    case .qualified(let qualifier, .pointer(let pointee)):
      // `char *const p`: the qualifier binds to the pointer, inside the declarator.
      return pointee.declaration(Self.pointer(to: pointee, "*\(qualifier) " + declarator))
    case .reference(let referee):
      return referee.declaration(Self.pointer(to: referee, "&" + declarator))
    case .array(let element):
      return element.declaration(declarator + "[]")
    case .function(let returns, let parameters, let variadic):
      return returns.declaration("\(declarator)(\(Prototype.list(parameters, variadic: variadic)))")
    case .void, .base, .typedef, .tagged, .qualified, .unknown:
      if declarator.isEmpty { return rendered }
      return "\(rendered) \(declarator)"
    }
  }

  /// A declarator that points at a function or an array needs parentheses:
  /// `(*callback)(int)`, not `*callback(int)`.
  private static func pointer(to pointee: DwarfType, _ declarator: String) -> String {
    switch pointee {
    case .function, .array: return "(\(declarator))"
    default: return declarator
    }
  }

  /// True when this type is a function pointer (possibly qualified or behind a typedef
  /// that is not shown): it cannot stand before a declarator as a plain type name.
  public var isFunctionPointer: Bool {
    switch self {
    case .pointer(.function): return true
    case .qualified(_, let type): return type.isFunctionPointer
    default: return false
    }
  }
}

extension Prototype {
  /// The parameters' names for C source: DWARF's, else `a1`, `a2`... (also for a name
  /// that repeats or that DWARF left out).
  public var sourceParameterNames: [String] {
    var used = Set<String>()
    return parameters.indices.map { index in
      let given = index < parameterNames.count ? parameterNames[index] : ""
      let name = given.isEmpty || used.contains(given) ? "a\(index + 1)" : given
      used.insert(name)
      return name
    }
  }

  /// The parameter list with names, as C source: `int x, const char *name`, `void`, or
  /// `const char *format, ...`.
  public var namedParameterList: String {
    if parameters.isEmpty { return variadic ? "..." : "void" }
    let named = zip(parameters, sourceParameterNames).map { $0.declaration($1) }
    return (named + (variadic ? ["..."] : [])).joined(separator: ", ")
  }

  /// The prototype as C source, with parameter names: `int compute(int x)`.
  public var sourceDeclaration: String {
    returns.declaration("\(name)(\(namedParameterList))")
  }

  /// What C needs declared before this prototype compiles in a file of its own: headers
  /// for the standard typedefs (`#include <stddef.h>` for `size_t`), the program's own
  /// typedefs spelled out, and `struct`/`union`/`enum` tags declared, dependencies first.
  /// A tag the prototype uses by value is declared incomplete all the same, with a note:
  /// the author pastes its definition from the program's headers.
  public var cDeclarations: [String] {
    var lines: [String] = []
    var includes: [String] = []
    var declared = Set<String>()
    func visit(_ type: DwarfType, byValue: Bool) {
      switch type {
      case .void, .base, .unknown: return
      case .pointer(let t), .reference(let t): visit(t, byValue: false)
      case .array(let t): visit(t, byValue: byValue)
      case .qualified(_, let t): visit(t, byValue: byValue)
      case .function(let r, let ps, _):
        visit(r, byValue: true)
        for p in ps { visit(p, byValue: true) }
      case .tagged(let kind, let name):
        guard !name.isEmpty, kind != "class", declared.insert("\(kind) \(name)").inserted else { return }
        lines.append(
          "\(kind) \(name);"
            + (byValue && kind != "enum"
              ? " /* used by value: replace with its definition from the program's headers */" : ""))
      case .typedef(let name, let underlying):
        if let header = Self.standardHeaders[name] {
          if !includes.contains(header) { includes.append(header) }
          return
        }
        guard declared.insert(name).inserted else { return }
        if case .tagged(let kind, "") = underlying {
          // An anonymous struct behind a typedef has no tag to declare: name one after
          // the typedef, which serves for pointers; its fields need the real definition.
          lines.append(
            "typedef \(kind) \(name) \(name);"
              + (byValue
                ? " /* used by value: replace with its definition from the program's headers */" : ""))
          return
        }
        visit(underlying, byValue: byValue)
        lines.append("typedef \(underlying.declaration(name));")
      }
    }
    visit(returns, byValue: true)
    for parameter in parameters { visit(parameter, byValue: true) }
    return includes.sorted().map { "#include <\($0)>" } + lines
  }

  /// Typedefs of the C library and POSIX, by the header that declares them: these are
  /// included, not spelled out (a second, different definition would not compile).
  static let standardHeaders: [String: String] = {
    var headers: [String: String] = [:]
    for name in ["size_t", "ptrdiff_t", "wchar_t", "max_align_t"] { headers[name] = "stddef.h" }
    for bits in [8, 16, 32, 64] {
      for name in ["int\(bits)_t", "uint\(bits)_t", "int_least\(bits)_t", "uint_least\(bits)_t"] {
        headers[name] = "stdint.h"
      }
      for name in ["int_fast\(bits)_t", "uint_fast\(bits)_t"] { headers[name] = "stdint.h" }
    }
    for name in ["intptr_t", "uintptr_t", "intmax_t", "uintmax_t"] { headers[name] = "stdint.h" }
    for name in [
      "ssize_t", "off_t", "off64_t", "pid_t", "uid_t", "gid_t", "mode_t", "time_t", "dev_t", "ino_t",
      "nlink_t", "blksize_t", "blkcnt_t", "id_t", "key_t", "clockid_t", "useconds_t", "suseconds_t",
    ] {
      headers[name] = "sys/types.h"
    }
    for name in ["FILE", "fpos_t"] { headers[name] = "stdio.h" }
    headers["va_list"] = "stdarg.h"
    headers["__gnuc_va_list"] = "stdarg.h"
    headers["socklen_t"] = "sys/socket.h"
    headers["sigset_t"] = "signal.h"
    headers["pthread_t"] = "pthread.h"
    headers["wint_t"] = "wchar.h"
    headers["bool"] = "stdbool.h"
    return headers
  }()
}
