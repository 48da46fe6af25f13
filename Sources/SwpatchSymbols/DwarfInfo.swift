import CElfDw
import FoundationEssentials
import Glibc
import SwpatchBase

/// The DWARF of one file (an object with `-g`, or its separate debug file), read with
/// libdw: function prototypes by entry address, and where each function was inlined.
///
/// One walk over every unit indexes both, the first time either is asked for; later
/// questions are hash lookups. libdw's handles are not thread-safe, so every question
/// takes the lock (SymbolCache shares one DwarfInfo between requests).
public final class DwarfInfo: @unchecked Sendable {
  public let path: String
  private let lock = Lock()
  private let fd: Int32
  private let dwarf: OpaquePointer
  private var index: Index?

  private struct Index {
    /// Subprogram DIE offsets by entry address (link-time, as in the symbol table).
    var functions: [UInt64: Dwarf_Off] = [:]
    /// Inlined call sites by the DIE offset of the function they are copies of.
    var inlined: [Dwarf_Off: [InlineSite]] = [:]
  }

  /// Opens the DWARF of `path`; nil when the file has none libdw can read.
  public init?(path: String) {
    self.path = path
    fd = open(path, O_RDONLY | O_CLOEXEC)
    guard fd >= 0 else { return nil }
    guard let dwarf = dwarf_begin(fd, DWARF_C_READ) else {
      close(fd)
      return nil
    }
    self.dwarf = dwarf
  }

  deinit {
    dwarf_end(dwarf)
    close(fd)
  }

  /// The prototype and inline sites of the function whose code starts at `address`
  /// (the symbol's link-time value); nil when no DWARF describes code there (a function
  /// written in assembly, or a unit compiled without `-g`).
  public func function(at address: UInt64) -> DwarfFunction? {
    lock.lock()
    defer { lock.unlock() }
    if index == nil { index = buildIndex() }
    guard let offset = index?.functions[address] else { return nil }
    var die = Dwarf_Die()
    guard dwarf_offdie(dwarf, offset, &die) != nil else { return nil }
    // Each inlined copy names exactly one origin, so nothing is counted twice; two calls
    // on one line are two sites.
    let sites = Self.origins(of: die).flatMap { index?.inlined[$0] ?? [] }
    let (file, line) = Self.declaration(of: die)
    return DwarfFunction(
      prototype: Self.prototype(of: die), inlineSites: sites.sorted(), file: file, line: line)
  }

  /// Where a subprogram is declared: `DW_AT_decl_file`/`decl_line` (libdw follows the
  /// abstract origin), else the name of the compile unit that holds it.
  private static func declaration(of die: Dwarf_Die) -> (file: String?, line: Int?) {
    var die = die
    if let file = dwarf_decl_file(&die) {
      var line: Int32 = 0
      return (String(cString: file), dwarf_decl_line(&die, &line) == 0 ? Int(line) : nil)
    }
    var unit = Dwarf_Die()
    guard dwarf_diecu(&die, &unit, nil, nil) != nil, let name = dwarf_diename(&unit) else {
      return (nil, nil)
    }
    return (String(cString: name), nil)
  }

  // MARK: The walk

  private func buildIndex() -> Index {
    var index = Index()
    var unit: OpaquePointer?
    while true {
      var next: OpaquePointer?
      var version: Dwarf_Half = 0
      var unitType: UInt8 = 0
      var unitDie = Dwarf_Die()
      guard dwarf_get_units(dwarf, unit, &next, &version, &unitType, &unitDie, nil) == 0 else {
        break
      }
      unit = next
      // Assembly (gas writes DW_LANG_Mips_Assembler) describes its functions with no
      // prototype: an unspecified return type and no parameters. There is nothing to
      // compare, and comparing anyway refused every patch of such a function (glibc's
      // syscall wrappers, `getpid`) as a signature mismatch; left out, the check says
      // "signature not checked".
      if dwarf_srclang(&unitDie) == Int32(DW_LANG_Mips_Assembler) { continue }
      var files: OpaquePointer?
      var fileCount = 0
      if dwarf_getsrcfiles(&unitDie, &files, &fileCount) != 0 { files = nil }
      walk(children: unitDie, files: files, into: &index)
    }
    return index
  }

  /// Records subprograms with code and inlined copies, descending into everything that
  /// can hold them (not into types: C++ member definitions sit outside their class).
  private func walk(children parent: Dwarf_Die, files: OpaquePointer?, into index: inout Index) {
    var parent = parent
    var die = Dwarf_Die()
    guard dwarf_child(&parent, &die) == 0 else { return }
    while true {
      switch Int(dwarf_tag(&die)) {
      case DW_TAG_subprogram:
        if let entry = Self.entryAddress(of: die), index.functions[entry] == nil {
          index.functions[entry] = dwarf_dieoffset(&die)
        }
      case DW_TAG_inlined_subroutine:
        if let origin = Self.reference(DW_AT_abstract_origin, of: die),
          let site = Self.callSite(of: die, files: files)
        {
          index.inlined[origin, default: []].append(site)
        }
      default: break
      }
      if dwarf_haschildren(&die) != 0 && !Self.isType(Int(dwarf_tag(&die))) {
        walk(children: die, files: files, into: &index)
      }
      var sibling = Dwarf_Die()
      guard dwarf_siblingof(&die, &sibling) == 0 else { return }
      die = sibling
    }
  }

  private static func isType(_ tag: Int) -> Bool {
    [
      DW_TAG_structure_type, DW_TAG_union_type, DW_TAG_class_type, DW_TAG_enumeration_type,
      DW_TAG_subroutine_type, DW_TAG_formal_parameter, DW_TAG_variable,
    ].contains(tag)
  }

  /// Where a function's code starts: DW_AT_entry_pc or DW_AT_low_pc, else the start of
  /// its first range (gcc splits hot and cold parts into DW_AT_ranges).
  private static func entryAddress(of die: Dwarf_Die) -> UInt64? {
    var die = die
    var pc: Dwarf_Addr = 0
    if dwarf_entrypc(&die, &pc) == 0 { return pc }
    var base: Dwarf_Addr = 0
    var start: Dwarf_Addr = 0
    var end: Dwarf_Addr = 0
    return dwarf_ranges(&die, 0, &base, &start, &end) > 0 ? start : nil
  }

  private static func callSite(of die: Dwarf_Die, files: OpaquePointer?) -> InlineSite? {
    guard let fileIndex = unsigned(DW_AT_call_file, of: die), let line = unsigned(DW_AT_call_line, of: die),
      let files, let path = dwarf_filesrc(files, Int(fileIndex), nil, nil)
    else { return nil }
    return InlineSite(file: PathText.lastComponent(String(cString: path)), line: Int(line))
  }

  /// The DIE itself and every abstract origin behind it: an inlined copy names the
  /// abstract instance, while the symbol's code is its concrete out-of-line instance.
  private static func origins(of die: Dwarf_Die) -> [Dwarf_Off] {
    var die = die
    var found = [dwarf_dieoffset(&die)]
    var current = die
    while found.count < 8, let origin = referencedDie(DW_AT_abstract_origin, of: current) {
      current = origin
      found.append(dwarf_dieoffset(&current))
    }
    return found
  }

  // MARK: Prototypes and types

  /// The prototype of a subprogram DIE. Name and return type may live on its abstract
  /// origin (dwarf_attr_integrate follows it); the parameters are read from the
  /// abstract instance too, which lists every one even when the concrete copy drops some.
  static func prototype(of die: Dwarf_Die) -> Prototype {
    var die = die
    var declaration = die
    while let origin = referencedDie(DW_AT_abstract_origin, of: declaration) { declaration = origin }
    let name = dwarf_diename(&die).map { String(cString: $0) } ?? "?"
    let (parameters, names, variadic) = parameterTypes(of: declaration, depth: 0)
    return Prototype(
      name: name, returns: type(of: die, depth: 0), parameters: parameters, variadic: variadic,
      parameterNames: names)
  }

  /// The `DW_TAG_formal_parameter` children's types and names ("" when unnamed), and
  /// whether `...` follows.
  private static func parameterTypes(of die: Dwarf_Die, depth: Int) -> ([DwarfType], [String], Bool) {
    var die = die
    var child = Dwarf_Die()
    var types: [DwarfType] = []
    var names: [String] = []
    var variadic = false
    guard dwarf_child(&die, &child) == 0 else { return ([], [], false) }
    while true {
      switch Int(dwarf_tag(&child)) {
      case DW_TAG_formal_parameter:
        types.append(type(of: child, depth: depth + 1))
        names.append(dwarf_diename(&child).map { String(cString: $0) } ?? "")
      case DW_TAG_unspecified_parameters: variadic = true
      default: break
      }
      var sibling = Dwarf_Die()
      guard dwarf_siblingof(&child, &sibling) == 0 else { break }
      child = sibling
    }
    return (types, names, variadic)
  }

  /// The type DW_AT_type of `die` names; no DW_AT_type means `void`.
  private static func type(of die: Dwarf_Die, depth: Int) -> DwarfType {
    guard depth < 24 else { return .unknown(tag: 0) }  // a malformed cycle
    var die = die
    var attribute = Dwarf_Attribute()
    var typeDie = Dwarf_Die()
    guard dwarf_attr_integrate(&die, UInt32(DW_AT_type), &attribute) != nil,
      dwarf_formref_die(&attribute, &typeDie) != nil
    else { return .void }
    return describe(typeDie, depth: depth + 1)
  }

  private static func describe(_ die: Dwarf_Die, depth: Int) -> DwarfType {
    var die = die
    let tag = Int(dwarf_tag(&die))
    let name = dwarf_diename(&die).map { String(cString: $0) } ?? ""
    let inner = { type(of: die, depth: depth) }
    switch tag {
    case DW_TAG_base_type: return .base(name: name, size: Int(dwarf_bytesize(&die)))
    case DW_TAG_unspecified_type: return .base(name: name, size: 0)
    case DW_TAG_pointer_type: return .pointer(inner())
    case DW_TAG_reference_type, DW_TAG_rvalue_reference_type: return .reference(inner())
    case DW_TAG_const_type: return .qualified("const", inner())
    case DW_TAG_volatile_type: return .qualified("volatile", inner())
    case DW_TAG_restrict_type: return .qualified("restrict", inner())
    case DW_TAG_atomic_type: return .qualified("_Atomic", inner())
    case DW_TAG_typedef: return .typedef(name, inner())
    case DW_TAG_structure_type: return .tagged(kind: "struct", name: name)
    case DW_TAG_union_type: return .tagged(kind: "union", name: name)
    case DW_TAG_enumeration_type: return .tagged(kind: "enum", name: name)
    case DW_TAG_class_type: return .tagged(kind: "class", name: name)
    case DW_TAG_array_type: return .array(inner())
    case DW_TAG_subroutine_type:
      let (parameters, _, variadic) = parameterTypes(of: die, depth: depth)
      return .function(returns: inner(), parameters: parameters, variadic: variadic)
    default: return .unknown(tag: tag)
    }
  }

  // MARK: Attributes

  private static func referencedDie(_ name: Int, of die: Dwarf_Die) -> Dwarf_Die? {
    var die = die
    var attribute = Dwarf_Attribute()
    var target = Dwarf_Die()
    guard dwarf_attr(&die, UInt32(name), &attribute) != nil,
      dwarf_formref_die(&attribute, &target) != nil
    else { return nil }
    return target
  }

  private static func reference(_ name: Int, of die: Dwarf_Die) -> Dwarf_Off? {
    guard var target = referencedDie(name, of: die) else { return nil }
    return dwarf_dieoffset(&target)
  }

  private static func unsigned(_ name: Int, of die: Dwarf_Die) -> UInt64? {
    var die = die
    var attribute = Dwarf_Attribute()
    var value: Dwarf_Word = 0
    guard dwarf_attr(&die, UInt32(name), &attribute) != nil, dwarf_formudata(&attribute, &value) == 0
    else { return nil }
    return value
  }
}
