import Foundation
import Glibc
import SwpatchBase
import SwpatchPatcher
import Testing

/// The content-addressed library store, on files of our own (no target, no daemon).
@Suite struct LibraryStoreTests {
  let directory: String = {
    let path = NSTemporaryDirectory() + "swpatch-store-" + UUID().uuidString
    try? FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    return path
  }()

  func storedNames(_ store: LibraryStore) -> [String] {
    (try? FileManager.default.contentsOfDirectory(atPath: store.directory)) ?? []
  }

  @Test func aLargeFileIsStoredUnderTheHashOfItsBytesWithoutKeepingThem() throws {
    defer { try? FileManager.default.removeItem(atPath: directory) }
    let source = directory + "/big.bin"
    let random = open("/dev/urandom", O_RDONLY)
    let out = open(source, O_WRONLY | O_CREAT, 0o600)
    var chunk = [UInt8](repeating: 0, count: 1 << 20)
    for _ in 0..<64 {
      #expect(read(random, &chunk, chunk.count) == chunk.count)
      #expect(write(out, chunk, chunk.count) == chunk.count)
    }
    close(out)
    close(random)
    let store = LibraryStore(stateDirectory: directory + "/state")
    let stored = try store.admit(source)
    // The bytes are not a property of the value: only the path to the stored copy is.
    #expect(!Mirror(reflecting: stored).children.contains { $0.label == "bytes" })
    #expect(stored.isNew)
    #expect(stored.path == store.directory + "/\(stored.sha256).so")
    #expect(stored.sha256 == sha256sum(stored.path))
    #expect(stored.sha256 == sha256sum(source))
    #expect(storedNames(store) == ["\(stored.sha256).so"])
    // A second admission of the same content reuses the copy; releasing it keeps it.
    let again = try store.admit(source)
    #expect(!again.isNew)
    store.release(again)
    #expect(storedNames(store) == ["\(stored.sha256).so"])
    store.release(stored)
    #expect(storedNames(store).isEmpty)
  }

  @Test func aDirectoryFIFOOrDeviceIsRefusedForWhatItIsWithoutBlocking() throws {
    defer { try? FileManager.default.removeItem(atPath: directory) }
    let fifo = directory + "/lib.fifo"
    #expect(mkfifo(fifo, 0o600) == 0)
    let store = LibraryStore(stateDirectory: directory + "/state")
    for (path, words) in [(directory, "is a directory"), (fifo, "is a FIFO"), ("/dev/null", "is a device")] {
      do {
        _ = try store.admit(path)
        Issue.record("\(path) was admitted")
      } catch {
        #expect("\(error)".contains(words), "\(error)")
        #expect(errorCode(error) == "bad_library")
      }
    }
    #expect(storedNames(store).isEmpty)
  }
}

/// `sha256sum FILE`'s hash.
func sha256sum(_ path: String) -> String {
  guard let (pid, fd) = try? spawn("/usr/bin/sha256sum", [path]) else { return "spawn failed" }
  var data = Data()
  drain(fd) { data.append(contentsOf: $0) }
  var status: Int32 = 0
  waitpid(pid, &status, 0)
  return String(decoding: data, as: UTF8.self).split(separator: " ").first.map(String.init) ?? ""
}
