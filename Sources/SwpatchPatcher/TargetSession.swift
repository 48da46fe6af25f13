import SwpatchProcess

/// What the patcher needs of a target held in a stop: its memory and mappings, where its
/// threads will resume, and the few calls it makes inside it. `StoppedTarget` (process
/// control) is the real one, reached only inside `TracerThread.withStopped`; the unit
/// tests drive `Transaction` against an in-memory one, the way SwiftNIO tests a channel
/// handler on an `EmbeddedChannel`, so that slot allocation, page placement, rollback and
/// journal replay are checked in milliseconds without a process.
protocol TargetSession: AnyObject {
  var pid: Int32 { get }

  // Memory
  func read(at address: UInt64, count: Int) throws(ProcessError) -> [UInt8]
  func write(_ bytes: [UInt8], at address: UInt64) throws(ProcessError)
  /// The target's mappings now (/proc/PID/maps for a real one).
  func mappings() throws(ProcessError) -> [MapEntry]
  func mmap(at hint: UInt64?, length: UInt64, executable: Bool) throws(ProcessError) -> UInt64?
  func mapData(length: UInt64) throws(ProcessError) -> UInt64
  func munmap(_ address: UInt64, length: UInt64) throws(ProcessError)

  // Threads
  var threads: [Int32] { get }
  var mainThread: Int32 { get }
  func instructionPointer(of tid: Int32) throws(ProcessError) -> UInt64
  func setInstructionPointer(_ address: UInt64, of tid: Int32) throws(ProcessError)
  func threadsInside(_ bytes: [Range<UInt64>]) throws(ProcessError) -> [(tid: Int32, rip: UInt64)]
  func runThreadsOut(of bytes: [Range<UInt64>], attempts: Int) throws(ProcessError) -> [(
    tid: Int32, rip: UInt64
  )]
  func releaseOthers(except tid: Int32) throws(ProcessError)
  func holdReleasedAgain() throws(ProcessError)

  // The hijack stub that remote calls return to
  var hasHijackStub: Bool { get }
  func useStub(at address: UInt64) throws(ProcessError)
  func forgetStub(in range: Range<UInt64>)

  // Loading a library
  func memfdCreate(name: String) throws(ProcessError) -> Int32
  func copy(file source: String, intoDescriptor fd: Int32, chunkSize: Int) throws(ProcessError)
  func write(_ edits: [(offset: UInt64, bytes: [UInt8])], intoDescriptor fd: Int32) throws(ProcessError)
  func identity(ofDescriptor fd: Int32) throws(ProcessError) -> FileIdentity
  func close(fd: Int32) throws(ProcessError)
  func dlopen(_ function: UInt64, descriptor fd: Int32, timeout: Duration) throws(ProcessError) -> UInt64?
  func dlerror(_ function: UInt64, timeout: Duration) throws(ProcessError) -> String?
  func dlclose(_ function: UInt64, handle: UInt64, timeout: Duration) throws(ProcessError)
}

extension StoppedTarget: TargetSession {
  func mappings() throws(ProcessError) -> [MapEntry] { try ProcessMaps.read(pid: pid) }

  func instructionPointer(of tid: Int32) throws(ProcessError) -> UInt64 { try registers(of: tid).rip }
}
