import CElfDw
import FoundationEssentials
import Glibc
import SwpatchBase

/// How a symbol is bound (`STB_*`).
public enum SymbolBinding: String, Sendable, Codable {
  case local, global, weak, other
  init(info: UInt8) {
    switch info >> 4 {  // GELF_ST_BIND is a macro Swift cannot import
    case 0: self = .local
    case 1: self = .global
    case 2: self = .weak
    default: self = .other
    }
  }
}

/// What a symbol names (`STT_*`), as far as patching cares.
public enum SymbolKind: String, Sendable, Codable {
  case function, ifunc, object, other
  init(info: UInt8) {
    switch info & 0xf {  // GELF_ST_TYPE
    case 2: self = .function
    case 10: self = .ifunc
    case 1: self = .object
    default: self = .other
    }
  }
  public var isCode: Bool { self == .function || self == .ifunc }
}

extension Character {
  fileprivate var isASCIIDigit: Bool { isASCII && isNumber }
}

/// One defined symbol of an ELF file, with its link-time value.
public struct ElfSymbol: Sendable, Equatable {
  public let name: String
  public let value: UInt64
  public let size: UInt64
  public let binding: SymbolBinding
  public let kind: SymbolKind
  /// A non-default symbol version (`foo@OLD`), which the dynamic linker does not bind to.
  public let hiddenVersion: Bool
}

/// An ELF file opened with libelf, with its symbols indexed by name.
///
/// `.symtab` is preferred; a stripped object falls back to `.dynsym`. Each name maps to
/// its definitions in table order, so `sympos` (1-based) picks among same-name locals.
public final class ElfFile: @unchecked Sendable {
  public let path: String
  public let type: UInt16
  public let machine: UInt16
  /// The GNU build id as lowercase hex, when the file has one.
  public private(set) var buildID: String?
  /// PT_LOAD segments as (file offset, virtual address), for computing the load bias.
  public private(set) var loadSegments: [(offset: UInt64, vaddr: UInt64)] = []
  /// True when the file has a `.symtab` (a stripped object has only `.dynsym`).
  public private(set) var hasSymtab = false
  /// True when the file carries DWARF (`.debug_info` with contents, not NOBITS).
  public private(set) var hasDebugInfo = false
  /// The `.gnu_debuglink` of a stripped object: the debug file's name and its CRC-32.
  public private(set) var debugLink: (name: String, crc: UInt32)?
  private var byName: [String: [ElfSymbol]] = [:]
  /// The undefined entries of `.dynsym`: what the file needs from elsewhere when loaded.
  public private(set) var undefinedDynamicSymbols: [UndefinedSymbol] = []
  /// Names `.dynsym` defines for other objects to bind to: global, weak or unique, of
  /// default or protected visibility, and the default version of a versioned name.
  public private(set) var exportedNames: Set<String> = []
  /// `DT_NEEDED`: the sonames the loader loads with this file.
  public private(set) var neededLibraries: [String] = []
  /// `DT_SONAME`: the name a library is linked and loaded by (`libz.so.1`), which may
  /// differ from its file name (`libz.so.1.2.13`).
  public private(set) var soname: String?
  /// Link-time addresses the loader calls when it maps the file: `.preinit_array`,
  /// `.init_array` and `.ctors` entries, in that order.
  private var initArray: [UInt64] = []
  /// `DT_INIT`: the `_init` function of crti, or one named with `-Wl,-init=`.
  private var initFunction: UInt64?
  /// Clone names by the name they were cloned from, indexed once so that looking up
  /// the clones of a function is a hash lookup, not a scan of every name.
  private var cloneNames: [String: [String]] = [:]

  public static let x86_64: UInt16 = 62
  public static let sharedObject: UInt16 = 3

  /// The key `SymbolCache` files this parse under.
  public let cacheKey: String

  /// Opens and indexes `path`; fails when it is not a 64-bit ELF file. Prefer
  /// `SymbolCache.shared.file(at:)`, which parses each object once.
  public convenience init(path: String) throws(SymbolError) {
    try self.init(path: path, cacheKey: Self.cacheKey(path: path))
  }

  init(path: String, cacheKey: String) throws(SymbolError) {
    self.path = path
    self.cacheKey = cacheKey
    _ = elf_version(UInt32(EV_CURRENT))
    let fd = open(path, O_RDONLY | O_CLOEXEC)
    guard fd >= 0 else {
      throw .cannotOpen(path: path, reason: String(cString: strerror(errno)))
    }
    defer { close(fd) }
    guard let elf = elf_begin(fd, ELF_C_READ_MMAP, nil) else {
      throw .cannotOpen(path: path, reason: "not an ELF file")
    }
    defer { elf_end(elf) }
    var ehdr = GElf_Ehdr()
    guard elf_kind(elf) == ELF_K_ELF else { throw .cannotOpen(path: path, reason: "not an ELF file") }
    guard gelf_getclass(elf) == ELFCLASS64,
      gelf_getehdr(elf, &ehdr) != nil
    else { throw .cannotOpen(path: path, reason: "not a 64-bit ELF file") }
    type = ehdr.e_type
    machine = ehdr.e_machine
    readProgramHeaders(elf)
    readSections(elf)
  }

  /// What identifies this file's contents for `SymbolCache`: the file itself (device
  /// and inode) and what changes whenever its bytes do (size, modification and change
  /// times). Never the build id alone: two different libraries can be linked with one
  /// `--build-id=0x…` and the same size, and a cache keyed by it would hand the second
  /// one the first one's symbols. Every process that maps one file still shares a parse.
  static func cacheKey(path: String) throws(SymbolError) -> String {
    var info = stat()
    guard stat(path, &info) == 0 else {
      throw .cannotOpen(path: path, reason: String(cString: strerror(errno)))
    }
    let m = info.st_mtim
    let c = info.st_ctim
    return
      "file:\(info.st_dev):\(info.st_ino):\(info.st_size):\(m.tv_sec).\(m.tv_nsec):\(c.tv_sec).\(c.tv_nsec)"
  }

  /// Every definition named `name` that is code or data (not undefined references).
  public func symbols(named name: String) -> [ElfSymbol] { byName[name] ?? [] }

  /// All symbol names, for callers that look for compiler clones (`foo.isra.0`).
  public var names: Dictionary<String, [ElfSymbol]>.Keys { byName.keys }

  /// Function symbols that are compiler clones of `name`: `name.constprop.N`,
  /// `name.isra.N`, `name.part.N`, `name.cold` and their combinations
  /// (`name.isra.0.cold`), sorted by name. Callers may reach these instead of `name`.
  public func clones(of name: String) -> [ElfSymbol] {
    (cloneNames[name] ?? []).sorted().compactMap { byName[$0]?.first { $0.kind == .function } }
  }

  /// `constprop.0`, `isra.1.cold`, `part.0.constprop.1`, `cold`...
  static func isCloneSuffix(_ suffix: Substring) -> Bool {
    let parts = suffix.split(separator: ".", omittingEmptySubsequences: false)
    guard !parts.isEmpty else { return false }
    var i = 0
    while i < parts.count {
      switch parts[i] {
      case "cold": i += 1
      case "constprop", "isra", "part":
        guard i + 1 < parts.count, !parts[i + 1].isEmpty, parts[i + 1].allSatisfy(\.isASCIIDigit)
        else { return false }
        i += 2
      default: return false
      }
    }
    return true
  }

  /// Refuses anything that is not an x86-64 shared object, before it reaches a target.
  public func checkLoadableLibrary() throws(SymbolError) {
    guard machine == Self.x86_64 else {
      throw .badLibrary(path: path, reason: "is not built for x86-64 (e_machine \(machine))")
    }
    guard type == Self.sharedObject else {
      throw .badLibrary(path: path, reason: "is not a shared object (e_type \(type))")
    }
  }

  /// The load bias for a mapping of this file at `start` with file `offset`.
  public func loadBias(mappedAt start: UInt64, offset: UInt64) -> UInt64 {
    let page: UInt64 = 0xfff
    // The segment whose first page is this mapping's first page: vaddr and file offset
    // are congruent modulo the page size, so the page-aligned pair gives the bias.
    let segment = loadSegments.first { $0.offset & ~page == offset } ?? loadSegments.first ?? (0, 0)
    return start &- ((segment.vaddr & ~page) &+ (offset &- (segment.offset & ~page)))
  }

  private func readProgramHeaders(_ elf: OpaquePointer) {
    var count = 0
    guard elf_getphdrnum(elf, &count) == 0 else { return }
    for i in 0..<count {
      var phdr = GElf_Phdr()
      guard gelf_getphdr(elf, Int32(i), &phdr) != nil, phdr.p_type == PT_LOAD else { continue }
      loadSegments.append((phdr.p_offset, phdr.p_vaddr))
    }
  }

  private func readSections(_ elf: OpaquePointer) {
    var symtab: OpaquePointer?
    var dynsym: OpaquePointer?
    var versym: OpaquePointer?
    var names = 0
    _ = elf_getshdrstrndx(elf, &names)
    var scn = elf_nextscn(elf, nil)
    while let section = scn {
      var shdr = GElf_Shdr()
      if gelf_getshdr(section, &shdr) != nil {
        let name = elf_strptr(elf, names, Int(shdr.sh_name)).map { String(cString: $0) } ?? ""
        if name == ".debug_info" && shdr.sh_type != UInt32(SHT_NOBITS) { hasDebugInfo = true }
        if name == ".gnu_debuglink" { debugLink = Self.debugLink(in: section) }
        switch shdr.sh_type {
        case UInt32(SHT_SYMTAB): symtab = section
        case UInt32(SHT_DYNSYM): dynsym = section
        case UInt32(SHT_GNU_versym): versym = section
        case UInt32(SHT_NOTE): if buildID == nil { buildID = Self.buildID(in: section) }
        case UInt32(SHT_PREINIT_ARRAY), UInt32(SHT_INIT_ARRAY): initArray += Self.words(in: section)
        case UInt32(SHT_DYNAMIC):
          initFunction = Self.dynamicValue(Int64(DT_INIT), in: section)
          neededLibraries = Self.dynamicStrings(
            Int64(DT_NEEDED), elf, in: section, strings: Int(shdr.sh_link))
          soname = Self.dynamicStrings(Int64(DT_SONAME), elf, in: section, strings: Int(shdr.sh_link)).first
        default:
          // .ctors of old toolchains: -1 first, 0 last, code addresses between.
          if name == ".ctors" { initArray += Self.words(in: section).filter { $0 != 0 && $0 != UInt64.max } }
        }
      }
      scn = elf_nextscn(elf, section)
    }
    hasSymtab = symtab != nil
    if let dynsym { indexDynamic(elf, dynsym, versions: versym) }
    if let symtab {
      index(elf, symtab, versions: nil)
    } else if let dynsym {
      index(elf, dynsym, versions: versym)
    }
    indexClones()
  }

  /// The 8-byte words of a section's contents.
  private static func words(in section: OpaquePointer) -> [UInt64] {
    guard let data = elf_getdata(section, nil), let base = data.pointee.d_buf else { return [] }
    let bytes = UnsafeRawBufferPointer(start: base, count: data.pointee.d_size)
    return stride(from: 0, to: bytes.count - 7, by: 8).map {
      bytes.loadUnaligned(fromByteOffset: $0, as: UInt64.self)
    }
  }

  /// The value of the first `tag` entry of a `SHT_DYNAMIC` section.
  private static func dynamicValue(_ tag: Int64, in section: OpaquePointer) -> UInt64? {
    guard let data = elf_getdata(section, nil) else { return nil }
    var index: Int32 = 0
    var entry = GElf_Dyn()
    while gelf_getdyn(data, index, &entry) != nil, entry.d_tag != Int64(DT_NULL) {
      if entry.d_tag == tag { return entry.d_un.d_ptr }
      index += 1
    }
    return nil
  }

  /// The strings of every `tag` entry (`DT_NEEDED`, `DT_SONAME`) of a `SHT_DYNAMIC`
  /// section, from its string table.
  private static func dynamicStrings(
    _ tag: Int64, _ elf: OpaquePointer, in section: OpaquePointer, strings: Int
  ) -> [String] {
    guard let data = elf_getdata(section, nil) else { return [] }
    var names: [String] = []
    var index: Int32 = 0
    var entry = GElf_Dyn()
    while gelf_getdyn(data, index, &entry) != nil, entry.d_tag != Int64(DT_NULL) {
      if entry.d_tag == tag, let name = elf_strptr(elf, strings, Int(entry.d_un.d_val)) {
        names.append(String(cString: name))
      }
      index += 1
    }
    return names
  }

  /// Reads what `.dynsym` says about linking: its undefined entries (with where each
  /// lies in the file, for `AbsoluteBinding`) and the names it exports.
  private func indexDynamic(_ elf: OpaquePointer, _ section: OpaquePointer, versions: OpaquePointer?) {
    var shdr = GElf_Shdr()
    guard gelf_getshdr(section, &shdr) != nil, let data = elf_getdata(section, nil),
      shdr.sh_entsize == 24
    else { return }
    let versionData = versions.flatMap { elf_getdata($0, nil) }
    let count = Int(shdr.sh_size / shdr.sh_entsize)
    for i in 1..<max(count, 1) {
      var sym = GElf_Sym()
      guard gelf_getsym(data, Int32(i), &sym) != nil, sym.st_name != 0,
        let cName = elf_strptr(elf, Int(shdr.sh_link), Int(sym.st_name))
      else { continue }
      let name = String(cString: cName)
      let binding = sym.st_info >> 4  // GELF_ST_BIND
      if sym.st_shndx == 0 {  // SHN_UNDEF
        guard binding != 0 else { continue }  // a local undefined entry names nothing to bind
        undefinedDynamicSymbols.append(
          UndefinedSymbol(
            name: name, index: i, isWeak: binding == 2, other: sym.st_other,
            entryOffset: shdr.sh_offset + UInt64(i) * shdr.sh_entsize))
        continue
      }
      // STB_GLOBAL, STB_WEAK, STB_GNU_UNIQUE; STV_DEFAULT or STV_PROTECTED.
      guard binding == 1 || binding == 2 || binding == 10, sym.st_other & 3 == 0 || sym.st_other & 3 == 3
      else { continue }
      if let versionData, let buf = versionData.pointee.d_buf, versionData.pointee.d_size >= (i + 1) * 2,
        buf.load(fromByteOffset: i * 2, as: UInt16.self) & 0x8000 != 0
      {
        continue  // foo@OLD: the loader binds an unversioned reference to the default only
      }
      exportedNames.insert(name)
    }
  }

  /// The code this file runs when the loader maps it, by name (`0x…` when unnamed):
  /// constructors, C++ static initialisers, an `-init=` function. Left out: what every
  /// gcc or clang object carries (crti's `_init`, crtbegin's `frame_dummy`), which only
  /// registers frame tables. In a file without `.symtab` those cannot be named, so the
  /// first `.init_array` entry (crtbegin's, linked first) and `DT_INIT` are taken to be
  /// theirs.
  public var loadTimeCode: [String] {
    var named: [UInt64: String] = [:]
    for (name, symbols) in byName {
      for symbol in symbols where symbol.kind.isCode { named[symbol.value] = name }
    }
    func name(_ address: UInt64) -> String { named[address] ?? hexAddress(address) }
    var found: [String] = []
    for (i, address) in initArray.enumerated() where address != 0 {
      if hasSymtab ? named[address] == "frame_dummy" : i == 0 { continue }
      found.append(name(address))
    }
    if let initFunction, hasSymtab, named[initFunction] != "_init" { found.append(name(initFunction)) }
    return found
  }

  /// Files `foo.isra.0.cold` under `foo`: the first dot after which a clone suffix follows.
  private func indexClones() {
    for name in byName.keys {
      var from = name.startIndex
      while let dot = name[from...].firstIndex(of: ".") {
        let suffix = name[name.index(after: dot)...]
        if dot > name.startIndex && Self.isCloneSuffix(suffix) {
          cloneNames[String(name[..<dot]), default: []].append(name)
          break
        }
        from = name.index(after: dot)
      }
    }
  }

  private func index(_ elf: OpaquePointer, _ section: OpaquePointer, versions: OpaquePointer?) {
    var shdr = GElf_Shdr()
    guard gelf_getshdr(section, &shdr) != nil, let data = elf_getdata(section, nil),
      shdr.sh_entsize > 0
    else { return }
    let versionData = versions.flatMap { elf_getdata($0, nil) }
    let count = Int(shdr.sh_size / shdr.sh_entsize)
    byName.reserveCapacity(count)
    for i in 1..<max(count, 1) {
      var sym = GElf_Sym()
      guard gelf_getsym(data, Int32(i), &sym) != nil, sym.st_shndx != 0,  // SHN_UNDEF
        sym.st_name != 0, let cName = elf_strptr(elf, Int(shdr.sh_link), Int(sym.st_name))
      else { continue }
      let kind = SymbolKind(info: sym.st_info)
      guard kind != .other else { continue }
      var hidden = false
      if let versionData, let buf = versionData.pointee.d_buf,
        versionData.pointee.d_size >= (i + 1) * 2
      {
        hidden = buf.load(fromByteOffset: i * 2, as: UInt16.self) & 0x8000 != 0
      }
      var name = String(cString: cName)
      // In .symtab a versioned definition carries its version in its name: `dlopen@@GLIBC_2.34`
      // is the default version, `dlopen@GLIBC_2.2.5` a hidden one (as .dynsym's versym says).
      if versions == nil, let at = name.firstIndex(of: "@"), at > name.startIndex {
        hidden = !name[at...].hasPrefix("@@")
        name = String(name[..<at])
      }
      let symbol = ElfSymbol(
        name: name, value: sym.st_value, size: sym.st_size,
        binding: SymbolBinding(info: sym.st_info), kind: kind, hiddenVersion: hidden)
      byName[symbol.name, default: []].append(symbol)
    }
  }

  /// `.gnu_debuglink`: a NUL-terminated file name, padded to 4 bytes, then a CRC-32.
  private static func debugLink(in section: OpaquePointer) -> (name: String, crc: UInt32)? {
    guard let data = elf_getdata(section, nil), let base = data.pointee.d_buf else { return nil }
    let bytes = UnsafeRawBufferPointer(start: base, count: data.pointee.d_size)
    guard let nul = bytes.firstIndex(of: 0) else { return nil }
    let crcOffset = (nul + 4) & ~3
    guard nul > 0, crcOffset + 4 <= bytes.count else { return nil }
    let crc = bytes.loadUnaligned(fromByteOffset: crcOffset, as: UInt32.self)
    return (String(decoding: bytes[..<nul], as: UTF8.self), UInt32(littleEndian: crc))
  }

  /// Reads NT_GNU_BUILD_ID from a note section.
  private static func buildID(in section: OpaquePointer) -> String? {
    guard let data = elf_getdata(section, nil) else { return nil }
    var offset = 0
    while true {
      var note = GElf_Nhdr()
      var nameOffset = 0
      var descOffset = 0
      let next = gelf_getnote(data, offset, &note, &nameOffset, &descOffset)
      if next == 0 { return nil }
      if note.n_type == 3, note.n_namesz == 4, let base = data.pointee.d_buf {  // "GNU\0"
        let desc = UnsafeRawBufferPointer(
          start: base + descOffset, count: Int(note.n_descsz))
        return desc.map { hexDigits($0, width: 2) }.joined()
      }
      offset = next
    }
  }
}
