import SwpatchProcess

@testable import SwpatchPatcher

/// A target held in a stop, in memory: regions of bytes, threads with an instruction
/// pointer each, and a write that can be made to fail at a chosen count (`failWrite`),
/// so that the patcher's transaction can be driven through every step without a process.
final class FakeTarget: TargetSession {
  struct Region {
    var start: UInt64
    var bytes: [UInt8]
    var executable: Bool
    /// Backed by a file (the program's code), else anonymous (a trampoline page).
    var file: Bool
    var end: UInt64 { start + UInt64(bytes.count) }
  }

  let pid: Int32 = 4242
  var regions: [Region]
  var rips: [Int32: UInt64] = [4242: 0x1000]
  /// The write with this number (1 is the first) fails with EIO, once.
  var failWrite: Int?
  private(set) var writes = 0
  private var stub: UInt64?
  /// Where a mapping without a hint goes: far from everything, as the kernel would.
  private var nextFar: UInt64 = 0x7f00_0000_0000

  init(program: [UInt8], at base: UInt64) {
    regions = [Region(start: base, bytes: program, executable: true, file: true)]
  }

  private func region(_ address: UInt64, _ count: Int) -> Int? {
    regions.firstIndex { $0.start <= address && address + UInt64(count) <= $0.end }
  }

  func read(at address: UInt64, count: Int) throws(ProcessError) -> [UInt8] {
    guard let i = region(address, count) else {
      throw .memory(address: address, count: count, write: false, errno: .badAddress)
    }
    let offset = Int(address - regions[i].start)
    return Array(regions[i].bytes[offset..<offset + count])
  }

  func write(_ bytes: [UInt8], at address: UInt64) throws(ProcessError) {
    writes += 1
    if writes == failWrite {
      throw .memory(address: address, count: bytes.count, write: true, errno: .ioError)
    }
    guard let i = region(address, bytes.count) else {
      throw .memory(address: address, count: bytes.count, write: true, errno: .badAddress)
    }
    let offset = Int(address - regions[i].start)
    regions[i].bytes.replaceSubrange(offset..<offset + bytes.count, with: bytes)
  }

  func mappings() throws(ProcessError) -> [MapEntry] {
    regions.sorted { $0.start < $1.start }.map {
      MapEntry(
        start: $0.start, end: $0.end, permissions: $0.executable ? "r-xp" : "rw-p", offset: 0,
        device: $0.file ? "08:01" : "00:00", inode: $0.file ? 77 : 0, path: $0.file ? "/srv/app" : "")
    }
  }

  func mmap(at hint: UInt64?, length: UInt64, executable: Bool) throws(ProcessError) -> UInt64? {
    let base = hint ?? nextFar
    if hint == nil { nextFar += 0x10_0000 }
    guard !regions.contains(where: { base < $0.end && $0.start < base + length }) else { return nil }
    regions.append(
      Region(start: base, bytes: .init(repeating: 0, count: Int(length)), executable: executable, file: false)
    )
    return base
  }

  func mapData(length: UInt64) throws(ProcessError) -> UInt64 {
    try mmap(at: nil, length: length, executable: false) ?? 0
  }

  func munmap(_ address: UInt64, length: UInt64) throws(ProcessError) {
    regions.removeAll { $0.start == address && !$0.file }
  }

  var threads: [Int32] { rips.keys.sorted() }
  var mainThread: Int32 { pid }
  func instructionPointer(of tid: Int32) throws(ProcessError) -> UInt64 { rips[tid] ?? 0 }
  func setInstructionPointer(_ address: UInt64, of tid: Int32) throws(ProcessError) { rips[tid] = address }

  func threadsInside(_ bytes: [Range<UInt64>]) throws(ProcessError) -> [(tid: Int32, rip: UInt64)] {
    threads.compactMap { tid in
      let rip = rips[tid]!
      return bytes.contains { $0.contains(rip) && rip != $0.lowerBound } ? (tid, rip) : nil
    }
  }

  /// A thread let run leaves the bytes at once here: it goes to their end.
  func runThreadsOut(of bytes: [Range<UInt64>], attempts: Int) throws(ProcessError) -> [(
    tid: Int32, rip: UInt64
  )] {
    for (tid, _) in try threadsInside(bytes) {
      if let range = bytes.first(where: { $0.contains(rips[tid]!) }) { rips[tid] = range.upperBound }
    }
    return []
  }

  func releaseOthers(except tid: Int32) throws(ProcessError) {}
  func holdReleasedAgain() throws(ProcessError) {}

  var hasHijackStub: Bool { stub != nil }
  func useStub(at address: UInt64) throws(ProcessError) { stub = address }
  func forgetStub(in range: Range<UInt64>) { if let stub, range.contains(stub) { self.stub = nil } }

  // Loading a library is not modelled: the tests plan with addresses that are "loaded".
  func memfdCreate(name: String) throws(ProcessError) -> Int32 { throw .processExited(pid: pid) }
  func copy(file source: String, intoDescriptor fd: Int32, chunkSize: Int) throws(ProcessError) {
    throw .processExited(pid: pid)
  }
  func write(_ edits: [(offset: UInt64, bytes: [UInt8])], intoDescriptor fd: Int32) throws(ProcessError) {
    throw .processExited(pid: pid)
  }
  func identity(ofDescriptor fd: Int32) throws(ProcessError) -> FileIdentity {
    throw .processExited(pid: pid)
  }
  func close(fd: Int32) throws(ProcessError) {}
  func dlopen(_ function: UInt64, descriptor fd: Int32, timeout: Duration) throws(ProcessError) -> UInt64? {
    nil
  }
  func dlerror(_ function: UInt64, timeout: Duration) throws(ProcessError) -> String? { nil }
  func dlclose(_ function: UInt64, handle: UInt64, timeout: Duration) throws(ProcessError) {}
}
