import FoundationEssentials
import Glibc
import SwpatchBase

/// Parsed ELF files and their DWARF, kept across requests so that a long-lived daemon
/// parses each object once. Entries are keyed by the file and its content stamps (see
/// `ElfFile.cacheKey`), so every process that maps the same library shares one parse.
/// ElfFile is immutable once built and DwarfInfo locks itself, so both can be shared.
public final class SymbolCache: @unchecked Sendable {
  public static let shared = SymbolCache()

  /// Parsed objects kept at most; the least recently used goes first.
  public let capacity: Int
  private let lock = Lock()
  private var files: [String: ElfFile] = [:]
  /// DWARF per file key; nil caches "this file has no usable DWARF".
  private var dwarf: [String: DwarfInfo?] = [:]
  private var recent: [String] = []

  public init(capacity: Int = 256) {
    self.capacity = capacity
  }

  /// The parsed file at `path`, from the cache when its contents were parsed before.
  public func file(at path: String) throws(SymbolError) -> ElfFile {
    let key = try ElfFile.cacheKey(path: path)
    if let cached = lookup(key) { return cached }
    // Parsed outside the lock: a large object takes a while, and other requests for
    // other objects should not wait behind it. Two racing parses of one file are harmless.
    let parsed = try ElfFile(path: path, cacheKey: key)
    store(parsed, key: key)
    return parsed
  }

  /// The DWARF of `file`, opened once; nil when it has none.
  public func dwarf(of file: ElfFile) -> DwarfInfo? {
    lock.lock()
    if let cached = dwarf[file.cacheKey] {
      lock.unlock()
      return cached
    }
    lock.unlock()
    let opened = file.hasDebugInfo ? DwarfInfo(path: file.path) : nil
    lock.lock()
    defer { lock.unlock() }
    if files[file.cacheKey] != nil { dwarf[file.cacheKey] = .some(opened) }
    return opened
  }

  /// Forgets every parse, so the next look-up reads the files again (the benchmark's
  /// cold look-ups).
  public func removeAll() {
    lock.lock()
    defer { lock.unlock() }
    files = [:]
    dwarf = [:]
    recent = []
  }

  /// How many parsed files the cache holds (for tests of eviction).
  public var count: Int {
    lock.lock()
    defer { lock.unlock() }
    return files.count
  }

  private func lookup(_ key: String) -> ElfFile? {
    lock.lock()
    defer { lock.unlock() }
    guard let file = files[key] else { return nil }
    touch(key)
    return file
  }

  private func store(_ file: ElfFile, key: String) {
    lock.lock()
    defer { lock.unlock() }
    if files[key] == nil, files.count >= capacity, let oldest = recent.first {
      recent.removeFirst()
      files[oldest] = nil
      dwarf[oldest] = nil
    }
    files[key] = file
    touch(key)
  }

  /// Marks `key` most recently used. A linear scan of at most `capacity` keys.
  private func touch(_ key: String) {
    recent.removeAll { $0 == key }
    recent.append(key)
  }
}
