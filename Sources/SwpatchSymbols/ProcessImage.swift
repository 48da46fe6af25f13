import FoundationEssentials
import Glibc
import SwpatchBase
import SwpatchProcess

/// One ELF object mapped into a process: the main executable or a shared object.
public struct LoadedObject: Sendable {
  /// The path the kernel shows in maps (may end in " (deleted)").
  public let path: String
  /// The basename the patch file's `object` key names (`app`, `libc.so.6`).
  public let name: String
  /// `DT_SONAME` (`libz.so.1` for the file `libz.so.1.2.13`), which `object` may name too.
  public let soname: String?
  /// A path that opens the very file that is mapped, even if it was deleted or
  /// replaced on disk since: /proc/PID/map_files/..., else /proc/PID/root/PATH.
  public let openPath: String
  public let mappings: [MapEntry]
  public let loadBias: UInt64
  public let isMainExecutable: Bool
  public let buildID: String?
  /// The separate debug file found for the object (`/usr/lib/debug/.build-id/...`), if
  /// it needed one: it has no `.symtab` or no DWARF of its own.
  public let debugFile: String?

  /// `path` without the " (deleted)" the kernel adds.
  public var cleanPath: String { path.hasSuffix(" (deleted)") ? String(path.dropLast(10)) : path }
  public var inode: UInt64 { mappings.first?.inode ?? 0 }
  public var device: String { mappings.first?.device ?? "" }
  public var range: Range<UInt64> {
    (mappings.map(\.start).min() ?? 0)..<(mappings.map(\.end).max() ?? 0)
  }
}

/// A symbol resolved to its runtime address in a process.
public struct ResolvedSymbol: Sendable, Equatable {
  public let name: String
  public let object: String
  public let objectPath: String
  public let address: UInt64
  public let size: UInt64
  public let binding: SymbolBinding
  public let kind: SymbolKind
  /// 1-based position among the object's definitions of this name.
  public let sympos: Int
  public let buildID: String?
  /// Where DWARF says it is defined (`loop.c:22`), when an error lists it among others.
  public var source: String? = nil
}

/// The ELF objects of one process and their symbols (the libdwfl idea of a process as a
/// set of modules, each with a load bias).
public final class ProcessImage: @unchecked Sendable {
  public let pid: Int32
  public let objects: [LoadedObject]
  private var files: [String: ElfFile]
  /// Separate debug files by the object's open path.
  private var debugFiles: [String: ElfFile]

  /// Opens every file-backed object process control finds mapped in `pid` (parsed once
  /// per build id, through SymbolCache), and the debug files of those that are stripped.
  public init(pid: Int32) throws(SymbolError) {
    self.pid = pid
    guard let mapped = try? TargetProcess.mappedObjects(of: pid) else { throw .processGone(pid: pid) }
    var objects: [LoadedObject] = []
    var files: [String: ElfFile] = [:]
    var debugFiles: [String: ElfFile] = [:]
    for object in mapped.objects {
      let openPath = object.openPath
      // Not every mapped file is ELF (locale archives, fonts): skip what libelf rejects.
      guard let elf = try? SymbolCache.shared.file(at: openPath) else { continue }
      files[openPath] = elf
      if !elf.hasSymtab || !elf.hasDebugInfo {
        debugFiles[openPath] = DebugFiles.find(
          for: elf, path: object.cleanPath, fileSystem: mapped.fileSystem)
      }
      let first = object.first
      objects.append(
        LoadedObject(
          path: object.path, name: PathText.lastComponent(object.cleanPath), soname: elf.soname,
          openPath: openPath,
          mappings: object.mappings, loadBias: elf.loadBias(mappedAt: first.start, offset: first.offset),
          isMainExecutable: object.isMainExecutable, buildID: elf.buildID,
          debugFile: debugFiles[openPath]?.path))
    }
    // The main executable is searched first, then shared objects in load order.
    self.objects = objects.filter(\.isMainExecutable) + objects.filter { !$0.isMainExecutable }
    self.files = files
    self.debugFiles = debugFiles
  }

  /// The file whose symbols describe `object`: the object itself, or its separate debug
  /// file when the object is stripped of `.symtab` and the debug file has one.
  public func elf(of object: LoadedObject) -> ElfFile? {
    guard let elf = files[object.openPath] else { return nil }
    if !elf.hasSymtab, let debug = debugFiles[object.openPath], debug.hasSymtab { return debug }
    return elf
  }

  /// The DWARF of `object`: its own, else its separate debug file's.
  public func dwarf(of object: LoadedObject) -> DwarfInfo? {
    guard let elf = files[object.openPath] else { return nil }
    if elf.hasDebugInfo { return SymbolCache.shared.dwarf(of: elf) }
    return debugFiles[object.openPath].flatMap { SymbolCache.shared.dwarf(of: $0) }
  }

  /// What DWARF says about a resolved function: its prototype and inline sites; nil
  /// when neither the object nor its debug file describes it.
  public func dwarfFunction(_ symbol: ResolvedSymbol) -> DwarfFunction? {
    guard let object = object(containing: symbol.address), let dwarf = dwarf(of: object) else {
      return nil
    }
    return dwarf.function(at: symbol.address &- object.loadBias)
  }

  /// The object that maps `address`, if any.
  public func object(containing address: UInt64) -> LoadedObject? {
    objects.first { object in object.mappings.contains { $0.start <= address && address < $0.end } }
  }

  /// The code symbol whose bytes hold `address` (for naming the function a thread is in).
  public func function(containing address: UInt64) -> ResolvedSymbol? {
    guard let object = object(containing: address), let elf = elf(of: object) else { return nil }
    let offset = address &- object.loadBias
    for name in elf.names {
      for (index, symbol) in elf.symbols(named: name).enumerated()
      where symbol.kind.isCode && symbol.value <= offset && offset < symbol.value &+ symbol.size {
        return ResolvedSymbol(
          name: name, object: object.name, objectPath: object.path, address: object.loadBias &+ symbol.value,
          size: symbol.size, binding: symbol.binding, kind: symbol.kind, sympos: index + 1,
          buildID: object.buildID)
      }
    }
    return nil
  }

  /// The loaded objects a patch file's `object` names: by file name (`libz.so.1.2.13`), by
  /// `DT_SONAME` (`libz.so.1`), or by full path, either as /proc/PID/maps shows it or any
  /// path that resolves, in the target's mount namespace, to the same file (device and
  /// inode), such as a symlink.
  public func objects(named objectName: String) -> [LoadedObject] {
    let byName = objects.filter {
      $0.name == objectName || $0.soname == objectName || $0.cleanPath == objectName
    }
    guard byName.isEmpty, objectName.hasPrefix("/"),
      let identity = TargetProcess.identity(ofPath: objectName, seenBy: pid)
    else { return byName }
    return objects.filter { $0.device == identity.device && $0.inode == identity.inode }
  }

  /// The one loaded object `objectName` names (see `objects(named:)`); none or several
  /// is an error naming what is loaded or the candidates.
  public func object(named objectName: String, excluding: (LoadedObject) -> Bool = { _ in false })
    throws(SymbolError) -> LoadedObject
  {
    let found = objects(named: objectName).filter { !excluding($0) }
    guard !found.isEmpty else {
      throw .objectNotLoaded(object: objectName, loaded: objects.filter { !excluding($0) }.map(\.name))
    }
    guard found.count == 1 else {
      throw .ambiguousObject(object: objectName, candidates: found.map(Self.describe))
    }
    return found[0]
  }

  /// An object as `swpatch symbols` and errors show it: file name, soname, path.
  static func describe(_ object: LoadedObject) -> String {
    "\(object.name) (soname \(object.soname ?? "none"), path \(object.cleanPath))"
  }

  /// The loaded object whose file is `device:inode` (how a just-loaded library is found).
  public func object(device: String, inode: UInt64) -> LoadedObject? {
    objects.first { $0.device == device && $0.inode == inode }
  }

  /// Every code definition of `name`, per object, with runtime addresses.
  public func candidates(_ name: String, in objectName: String? = nil) -> [ResolvedSymbol] {
    candidates(name, among: objectName.map(objects(named:)) ?? objects)
  }

  private func candidates(_ name: String, among searched: [LoadedObject]) -> [ResolvedSymbol] {
    searched.flatMap { object in
      Self.codeDefinitions(name, in: elf(of: object)).enumerated().map { index, symbol in
        ResolvedSymbol(
          name: name, object: object.name, objectPath: object.path,
          address: object.loadBias &+ symbol.value, size: symbol.size, binding: symbol.binding,
          kind: symbol.kind, sympos: index + 1, buildID: object.buildID)
      }
    }
  }

  /// Compiler clones of `name` in the loaded object `objectName` (`name.constprop.0`,
  /// `name.isra.0.cold`...), with runtime addresses, sorted by name.
  public func clones(of name: String, in objectName: String) -> [ResolvedSymbol] {
    objects.filter { $0.name == objectName }.flatMap { object in
      (elf(of: object)?.clones(of: name) ?? []).map { symbol in
        ResolvedSymbol(
          name: symbol.name, object: object.name, objectPath: object.path,
          address: object.loadBias &+ symbol.value, size: symbol.size, binding: symbol.binding,
          kind: symbol.kind, sympos: 1, buildID: object.buildID)
      }
    }
  }

  /// For an IFUNC `name` in `objectName`: a function of that object whose name contains
  /// `name` (`__strlen_avx2`, `pick_fast`), to suggest as the implementation to patch.
  public func ifuncImplementation(of name: String, in objectName: String) -> String? {
    guard let object = objects.first(where: { $0.name == objectName }), let elf = elf(of: object)
    else { return nil }
    let clones = Set(elf.clones(of: name).map(\.name))
    return elf.names.filter { candidate in
      candidate != name && candidate.contains(name) && !candidate.contains("resolver")
        && !clones.contains(candidate)
        && elf.symbols(named: candidate).contains { $0.kind == .function }
    }.sorted().first
  }

  /// Resolves the function `name`, as the patch file's `old`, `object` and `sympos`
  /// describe it. Ambiguity is an error that lists the candidates, never a guess.
  ///
  /// `file` names the source file that defines the function (a basename or a path
  /// suffix, from DWARF's `DW_AT_decl_file`): it picks among same-named statics by
  /// itself, and with `sympos` it must agree with the one `sympos` picks.
  public func resolve(
    _ name: String, in objectName: String? = nil, sympos: Int? = nil, file: String? = nil
  ) throws(SymbolError) -> ResolvedSymbol {
    let found: [ResolvedSymbol]
    do {
      found = try resolve(name, in: objectName, sympos: sympos, all: file != nil)
    } catch .ambiguous(let name, let candidates) {
      // Same-named statics are told apart by their source files: name them.
      throw .ambiguous(
        name: name,
        candidates: candidates.map { symbol in
          var described = symbol
          described.source = dwarfFunction(symbol).map(Self.location)
          return described
        })
    }
    guard let file else { return found[0] }
    let described = found.map { ($0, dwarfFunction($0)) }
    if let sympos {
      let chosen = try Self.pick(found, name: name, sympos: sympos)
      let chosenFile = described.first { $0.0 == chosen }?.1
      guard chosenFile?.isDefined(in: file) == true else {
        throw .sourceFileMismatch(
          name: name, file: file, sympos: sympos, actual: chosenFile?.file ?? "unknown (no DWARF)")
      }
      return chosen
    }
    let matching = described.filter { $0.1?.isDefined(in: file) == true }.map(\.0)
    guard !matching.isEmpty else {
      throw .sourceFileNotFound(
        name: name, file: file,
        candidates: described.map { symbol, dwarf in
          "sympos \(symbol.sympos) in \(symbol.object) (\(dwarf.map(Self.location) ?? "no DWARF"))"
        })
    }
    return try Self.pick(matching, name: name, sympos: nil)
  }

  /// `file:line` of a function's definition, or its file alone.
  public static func location(_ function: DwarfFunction) -> String {
    guard let file = function.file else { return "unknown file" }
    return function.line.map { "\(file):\($0)" } ?? file
  }

  /// Every definition `resolve` chooses among (`all`), or the one it picks.
  private func resolve(
    _ name: String, in objectName: String?, sympos: Int?, all: Bool
  ) throws(SymbolError) -> [ResolvedSymbol] {
    let searched = try objectName.map { name throws(SymbolError) in [try object(named: name)] } ?? objects
    let found = candidates(name, among: searched)
    if found.isEmpty {
      for object in searched {
        if let other = elf(of: object)?.symbols(named: name).first {
          throw .notAFunction(name: name, object: object.name, kind: "\(other.kind.rawValue)")
        }
      }
      throw .notFound(name: name, searched: searched.map(\.name))
    }
    return all ? found : [try Self.pick(found, name: name, sympos: sympos)]
  }

  /// One of `found` (a name's definitions): the only one, or the `sympos`th of the one
  /// object that has them; anything else is ambiguous.
  private static func pick(_ found: [ResolvedSymbol], name: String, sympos: Int?) throws(SymbolError)
    -> ResolvedSymbol
  {
    let objectsFound = Set(found.map(\.objectPath))
    if objectsFound.count > 1 {
      var names: [String] = []
      for symbol in found where !names.contains(symbol.object) { names.append(symbol.object) }
      throw .ambiguousAcrossObjects(name: name, objects: names)
    }
    if let sympos {
      guard sympos >= 1 && sympos <= found.count else {
        throw .symposOutOfRange(name: name, sympos: sympos, count: found.count)
      }
      return found[sympos - 1]
    }
    guard found.count == 1 else { throw .ambiguous(name: name, candidates: found) }
    return found[0]
  }

  /// Resolves `name` as a patch library's reference to the target's own function or
  /// variable (`externs` in the patch file), with the rules of `resolve`: every
  /// definition of code or data, local or global, in the objects `excluding` does not
  /// reject; `object` and `sympos` pick one; ambiguity is an error.
  public func resolveReference(
    _ name: String, in objectName: String? = nil, sympos: Int? = nil,
    excluding: (LoadedObject) -> Bool = { _ in false }
  ) throws(SymbolError) -> ResolvedSymbol {
    let searched =
      try objectName.map { name throws(SymbolError) in [try object(named: name, excluding: excluding)] }
      ?? objects.filter { !excluding($0) }
    let found = searched.flatMap { object in
      Self.definitions(name, in: elf(of: object)).enumerated().map { index, symbol in
        ResolvedSymbol(
          name: name, object: object.name, objectPath: object.path,
          address: object.loadBias &+ symbol.value, size: symbol.size, binding: symbol.binding,
          kind: symbol.kind, sympos: index + 1, buildID: object.buildID)
      }
    }
    guard !found.isEmpty else { throw .notFound(name: name, searched: searched.map(\.name)) }
    return try Self.pick(found, name: name, sympos: sympos)
  }

  /// The first object, the executable first, whose `.dynsym` exports `name` for the
  /// dynamic loader to bind to (see `ElfFile.exportedNames`).
  public func exporter(of name: String, excluding: (LoadedObject) -> Bool = { _ in false }) -> LoadedObject? {
    objects.first { !excluding($0) && files[$0.openPath]?.exportedNames.contains(name) == true }
  }

  /// Defined code and data symbols of one name, folded as `codeDefinitions` folds code.
  static func definitions(_ name: String, in elf: ElfFile?) -> [ElfSymbol] {
    let found = (elf?.symbols(named: name) ?? []).filter { $0.kind.isCode || $0.kind == .object }
    let preferred = found.contains { !$0.hiddenVersion } ? found.filter { !$0.hiddenVersion } : found
    var seen = Set<UInt64>()
    return preferred.filter { seen.insert($0.value).inserted }
  }

  /// Defined code symbols of one name, same-address aliases and non-default symbol
  /// versions (`dlopen@GLIBC_2.2.5` beside `dlopen@@GLIBC_2.34`) folded away.
  static func codeDefinitions(_ name: String, in elf: ElfFile?) -> [ElfSymbol] {
    let code = (elf?.symbols(named: name) ?? []).filter(\.kind.isCode)
    let preferred = code.contains { !$0.hiddenVersion } ? code.filter { !$0.hiddenVersion } : code
    var seen = Set<UInt64>()
    return preferred.filter { seen.insert($0.value).inserted }
  }

  /// Looks `name` up in a patch library file that is not (yet) loaded: the link-time
  /// value, to which the load bias is added once the target has loaded it.
  public static func librarySymbol(_ name: String, in library: ElfFile) throws(SymbolError)
    -> ElfSymbol
  {
    let found = codeDefinitions(name, in: library)
    guard let symbol = found.first(where: { $0.binding != .local }) ?? found.first else {
      if let other = library.symbols(named: name).first {
        throw .notAFunction(name: name, object: library.path, kind: other.kind.rawValue)
      }
      throw .notInLibrary(name: name, library: library.path)
    }
    return symbol
  }
}

extension ProcessImage {
  /// The code symbol `name` that starts exactly at `address`, in whichever object maps
  /// that address (the file actually mapped, even if replaced on disk since): how the
  /// size of a function the registry knows by name and address is found again.
  public func function(named name: String, at address: UInt64) -> ResolvedSymbol? {
    guard let object = object(containing: address) else { return nil }
    return candidates(name, in: object.name).first { $0.address == address }
  }
}

/// A function of an ELF file on disk (a program or library not running yet, or the file a
/// running target maps), with what its DWARF says: how `swpatch new` reads a binary path
/// the way `ProcessImage` reads a pid.
public enum ObjectFile {
  /// The code definition of `name` in the file at `path` (its `.symtab`, else its debug
  /// file's, else `.dynsym`), with the link-time address, and the function's DWARF (the
  /// file's own, else its separate debug file's). `objectName` must be the file's name
  /// when given. Ambiguity is an error listing the candidates, as for a process.
  public static func function(
    _ name: String, at path: String, objectName: String? = nil, sympos: Int? = nil
  ) throws(SymbolError) -> (symbol: ResolvedSymbol, dwarf: DwarfFunction?) {
    let resolved = URL(fileURLWithPath: path).resolvingSymlinksInPath().path
    let object = PathText.lastComponent(resolved)
    let elf = try SymbolCache.shared.file(at: resolved)
    if let objectName, objectName != object, objectName != elf.soname, objectName != resolved,
      objectName != path
    {
      throw .objectNotLoaded(object: objectName, loaded: [object])
    }
    let debug =
      elf.hasSymtab && elf.hasDebugInfo ? nil : DebugFiles.find(for: elf, path: resolved)
    let symbols = !elf.hasSymtab && debug?.hasSymtab == true ? debug! : elf
    let found = ProcessImage.codeDefinitions(name, in: symbols).enumerated().map { index, symbol in
      ResolvedSymbol(
        name: name, object: object, objectPath: resolved, address: symbol.value, size: symbol.size,
        binding: symbol.binding, kind: symbol.kind, sympos: index + 1, buildID: elf.buildID)
    }
    if found.isEmpty {
      if let other = symbols.symbols(named: name).first {
        throw .notAFunction(name: name, object: object, kind: other.kind.rawValue)
      }
      throw .notFound(name: name, searched: [object])
    }
    let symbol: ResolvedSymbol
    if let sympos {
      guard sympos >= 1 && sympos <= found.count else {
        throw .symposOutOfRange(name: name, sympos: sympos, count: found.count)
      }
      symbol = found[sympos - 1]
    } else {
      guard found.count == 1 else { throw .ambiguous(name: name, candidates: found) }
      symbol = found[0]
    }
    let dwarf =
      elf.hasDebugInfo
      ? SymbolCache.shared.dwarf(of: elf) : debug.flatMap { SymbolCache.shared.dwarf(of: $0) }
    return (symbol, dwarf?.function(at: symbol.address))
  }
}
