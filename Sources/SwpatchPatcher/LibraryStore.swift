import CCrypto
import FoundationEssentials
import Glibc
import SwpatchBase
import SwpatchRegistry
import SwpatchState

/// A patch library as the daemon admitted it: a copy, named by its SHA-256, in a folder
/// only root can write. What is validated and later loaded is this copy, so a file
/// swapped or rewritten on disk after the request cannot end up in the target. The
/// bytes stay on disk: a library can be hundreds of megabytes.
public struct StoredLibrary: Sendable, Equatable {
  /// The path the operator gave (for messages and status).
  public let originalPath: String
  /// The content-addressed copy: `<state>/libraries/<sha256>.so`.
  public let path: String
  public let sha256: String
  /// This admission made the copy (no earlier patch had stored the same content), so
  /// it is removed again unless the library ends up loaded (`LibraryStore.release`).
  public let isNew: Bool
}

/// The content-addressed library store under the state directory.
public struct LibraryStore: Sendable {
  public let state: StateDirectory
  public var directory: String { state.libraries }
  /// Read and write size while copying: memory use stays flat whatever the library's size.
  static let chunkSize = 1 << 20

  public init(stateDirectory: String) {
    state = StateDirectory(stateDirectory)
  }

  /// Reads `path` once, a chunk at a time, hashing exactly the bytes it copies, and
  /// keeps the copy under their hash.
  public func admit(_ path: String) throws(PatchError) -> StoredLibrary {
    // Looked at before it is opened: opening a FIFO blocks until a writer comes, and
    // opening a device can act on it.
    var info = stat()
    guard stat(path, &info) == 0 else { throw PatchError.libraryMissing(path: path) }
    if let kind = Self.notRegularFile(info.st_mode) {
      throw PatchError.libraryUnusable(path: path, reason: kind)
    }
    // O_NONBLOCK: should the path become a FIFO after the stat, open still returns at
    // once, and the fstat below refuses it.
    let input = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC)
    guard input >= 0 else {
      throw PatchError.libraryUnusable(
        path: path, reason: "cannot be opened: \(String(cString: strerror(errno)))")
    }
    defer { close(input) }
    guard fstat(input, &info) == 0 else { throw PatchError.libraryMissing(path: path) }
    if let kind = Self.notRegularFile(info.st_mode) {
      throw PatchError.libraryUnusable(path: path, reason: kind)
    }
    do {
      try state.create(state.libraries)
    } catch {
      throw PatchError.libraryStore(reason: "cannot create \(directory): \(error)")
    }
    // Written through a temporary name and renamed, so a reader never sees half a file.
    let temporary = state.newLibraryTemporary()
    let output = open(temporary, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
    guard output >= 0 else {
      throw PatchError.libraryStore(reason: "cannot write \(temporary): \(String(cString: strerror(errno)))")
    }
    let digest: String
    do {
      defer { close(output) }
      digest = try Self.copy(from: input, to: output, path: path, temporary: temporary)
    } catch {
      unlink(temporary)
      throw error
    }
    let stored = state.library(sha256: digest)
    if access(stored, F_OK) == 0 {
      unlink(temporary)
      return StoredLibrary(originalPath: path, path: stored, sha256: digest, isNew: false)
    }
    guard rename(temporary, stored) == 0 else {
      let reason = String(cString: strerror(errno))
      unlink(temporary)
      throw PatchError.libraryStore(reason: "cannot rename into \(stored): \(reason)")
    }
    return StoredLibrary(originalPath: path, path: stored, sha256: digest, isNew: true)
  }

  /// Removes a copy this admission made, when the operation that admitted it did not
  /// load it (refused, failed or a dry run): the store keeps only what targets use.
  public func release(_ library: StoredLibrary) {
    if library.isNew { unlink(library.path) }
  }

  /// Removes the copy of content `sha256`, once no patch of any target names it.
  public func discard(sha256: String) {
    unlink(state.library(sha256: sha256))
  }

  /// Removes copies left half-written by a daemon that died while admitting.
  public func removeLeftovers() {
    for path in state.libraryLeftovers() { unlink(path) }
  }

  /// Copies `input` to `output` and returns the lowercase hex SHA-256 of what it copied.
  private static func copy(from input: Int32, to output: Int32, path: String, temporary: String)
    throws(PatchError) -> String
  {
    guard let context = EVP_MD_CTX_new() else { throw PatchError.libraryStore(reason: "no SHA-256 context") }
    defer { EVP_MD_CTX_free(context) }
    EVP_DigestInit_ex(context, EVP_sha256(), nil)
    var chunk = [UInt8](repeating: 0, count: chunkSize)
    while true {
      let count = read(input, &chunk, chunk.count)
      if count < 0 && errno == EINTR { continue }
      guard count >= 0 else {
        throw PatchError.libraryUnusable(
          path: path, reason: "cannot be read: \(String(cString: strerror(errno)))")
      }
      if count == 0 { break }
      EVP_DigestUpdate(context, chunk, count)
      var offset = 0
      while offset < count {
        let written = chunk.withUnsafeBytes { write(output, $0.baseAddress! + offset, count - offset) }
        if written < 0 && errno == EINTR { continue }
        guard written > 0 else {
          throw PatchError.libraryStore(
            reason: "cannot write \(temporary): \(String(cString: strerror(errno)))")
        }
        offset += written
      }
    }
    var digest = [UInt8](repeating: 0, count: Int(EVP_MAX_MD_SIZE))
    var length: UInt32 = 0
    EVP_DigestFinal_ex(context, &digest, &length)
    return hexBytes(Array(digest.prefix(Int(length))))
  }

  /// Whether the file at `path` still holds the content `sha256` (what `status` shows
  /// as a patch's `on_disk`).
  public static func onDisk(path: String, sha256: String?) -> LibraryOnDisk {
    guard let sha256 else { return .unknown }
    guard let found = Self.sha256(ofFileAt: path) else { return .missing }
    return found == sha256 ? .same : .changed
  }

  /// The SHA-256 of the regular file at `path` (read a chunk at a time), or nil when it
  /// is not one or cannot be read: how `enable` tells that the file on disk has changed.
  static func sha256(ofFileAt path: String) -> String? {
    var info = stat()
    guard stat(path, &info) == 0, notRegularFile(info.st_mode) == nil else { return nil }
    let input = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC)
    guard input >= 0 else { return nil }
    defer { close(input) }
    guard let context = EVP_MD_CTX_new() else { return nil }
    defer { EVP_MD_CTX_free(context) }
    EVP_DigestInit_ex(context, EVP_sha256(), nil)
    var chunk = [UInt8](repeating: 0, count: chunkSize)
    while true {
      let count = read(input, &chunk, chunk.count)
      if count < 0 && errno == EINTR { continue }
      guard count >= 0 else { return nil }
      if count == 0 { break }
      EVP_DigestUpdate(context, chunk, count)
    }
    var digest = [UInt8](repeating: 0, count: Int(EVP_MAX_MD_SIZE))
    var length: UInt32 = 0
    EVP_DigestFinal_ex(context, &digest, &length)
    return hexBytes(Array(digest.prefix(Int(length))))
  }

  /// What a file that is not a regular file is, in words; nil for a regular file.
  static func notRegularFile(_ mode: mode_t) -> String? {
    switch mode & S_IFMT {
    case S_IFREG: return nil
    case S_IFDIR: return "is a directory"
    case S_IFIFO: return "is a FIFO"
    case S_IFCHR, S_IFBLK: return "is a device"
    case S_IFSOCK: return "is a socket"
    default: return "is not a regular file"
    }
  }
}
