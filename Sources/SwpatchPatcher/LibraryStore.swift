import CCrypto
import Foundation
import Glibc

/// A patch library as the daemon admitted it: a copy, named by its SHA-256, in a folder
/// only root can write. What is validated and later loaded is this copy, so a file
/// swapped or rewritten on disk after the request cannot end up in the target.
public struct StoredLibrary: Sendable, Equatable {
  /// The path the operator gave (for messages and status).
  public let originalPath: String
  /// The content-addressed copy: `<state>/libraries/<sha256>.so`.
  public let path: String
  public let sha256: String
  public let bytes: [UInt8]
}

/// The content-addressed library store under the state directory.
public struct LibraryStore: Sendable {
  public let directory: String

  public init(stateDirectory: String) {
    directory = stateDirectory + "/libraries"
  }

  /// Reads `path` once, hashes exactly those bytes and keeps them under their hash.
  public func admit(_ path: String) throws(PatchError) -> StoredLibrary {
    guard let data = FileManager.default.contents(atPath: path) else {
      throw PatchError.libraryMissing(path: path)
    }
    let bytes = [UInt8](data)
    let digest = Self.sha256(bytes)
    let stored = directory + "/" + digest + ".so"
    if !FileManager.default.fileExists(atPath: stored) {
      try write(bytes, to: stored)
    }
    return StoredLibrary(originalPath: path, path: stored, sha256: digest, bytes: bytes)
  }

  /// Writes through a temporary name and renames, so a reader never sees half a file.
  private func write(_ bytes: [UInt8], to path: String) throws(PatchError) {
    do {
      try FileManager.default.createDirectory(
        atPath: directory, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
      let temporary = path + ".tmp-\(getpid())"
      guard
        FileManager.default.createFile(
          atPath: temporary, contents: Data(bytes), attributes: [.posixPermissions: 0o600])
      else { throw PatchError.libraryStore(reason: "cannot write \(temporary)") }
      guard rename(temporary, path) == 0 else {
        throw PatchError.libraryStore(
          reason: "cannot rename into \(path): \(String(cString: strerror(errno)))")
      }
    } catch let error as PatchError {
      throw error
    } catch {
      throw PatchError.libraryStore(reason: "\(error)")
    }
  }

  /// Lowercase hex SHA-256 of `bytes` (OpenSSL's EVP digest).
  public static func sha256(_ bytes: [UInt8]) -> String {
    var digest = [UInt8](repeating: 0, count: Int(EVP_MAX_MD_SIZE))
    var length: UInt32 = 0
    _ = bytes.withUnsafeBytes { buffer in
      EVP_Digest(buffer.baseAddress, buffer.count, &digest, &length, EVP_sha256(), nil)
    }
    return digest.prefix(Int(length)).map { String(format: "%02x", $0) }.joined()
  }
}
