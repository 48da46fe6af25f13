import FoundationEssentials
import Glibc
import SwpatchBase
import SwpatchProcess

/// Who is at the other end of a connection, as the kernel says (SO_PEERCRED): not
/// what the client claims.
public struct PeerCredentials: Sendable, Equatable {
  public var pid: Int32
  public var uid: UInt32
  public var gid: UInt32

  public init(pid: Int32, uid: UInt32, gid: UInt32) {
    self.pid = pid
    self.uid = uid
    self.gid = gid
  }

  public var isRoot: Bool { uid == 0 }
}

/// Who may do what: root may patch any process; any other user only a process whose
/// real, effective, saved and filesystem uids and gids are all the caller's, which is
/// dumpable (its threads' /proc files are the caller's, not root's), with a library the caller
/// can read. A refusal changes nothing.
enum Authorizer {
  static func mayChange(pid: Int32, library: String?, caller: PeerCredentials) throws(AuthorizationError) {
    guard !caller.isRoot else { return }
    guard let owner = TargetProcess.credentials(of: pid) else { throw .noSuchProcess(pid: pid) }
    let ownsIt =
      !owner.uids.isEmpty && owner.uids.allSatisfy { $0 == caller.uid }
      && !owner.gids.isEmpty && owner.gids.allSatisfy { $0 == owner.gids[0] }
    guard ownsIt else { throw .notOwner(uid: caller.uid, pid: pid, uids: owner.uids) }
    guard owner.procOwners.allSatisfy({ $0 == caller.uid }) else { throw .notDumpable(pid: pid) }
    if let library { try checkReadable(library, by: caller) }
  }

  /// A user must not get a file they cannot read loaded into a process they control.
  private static func checkReadable(_ path: String, by caller: PeerCredentials) throws(AuthorizationError) {
    var info = stat()
    guard stat(path, &info) == 0 else { return }  // the engine reports a missing library
    let mode = info.st_mode
    let readable =
      (info.st_uid == caller.uid && mode & S_IRUSR != 0)
      || (info.st_gid == caller.gid && mode & S_IRGRP != 0) || mode & S_IROTH != 0
    guard readable else { throw .unreadableLibrary(uid: caller.uid, path: path) }
  }
}

/// Why a caller other than root may not change a process. Nothing was changed.
enum AuthorizationError: CodedError {
  case noSuchProcess(pid: Int32)
  case notOwner(uid: UInt32, pid: Int32, uids: [UInt32])
  case notDumpable(pid: Int32)
  case unreadableLibrary(uid: UInt32, path: String)

  var code: String {
    switch self {
    case .noSuchProcess: return "no_such_process"
    case .notOwner, .notDumpable, .unreadableLibrary: return "permission_denied"
    }
  }

  var description: String {
    switch self {
    case .noSuchProcess(let pid):
      return "no process with pid \(pid); check the pid with `ps`"
    case .notOwner(let uid, let pid, let uids):
      return
        "uid \(uid) may not patch pid \(pid) (uids \(uids.map(String.init).joined(separator: ","))); only root may patch another user's or a set-uid/set-gid process"
    case .notDumpable(let pid):
      return "pid \(pid) is not dumpable (set-uid, set-gid or prctl); only root may patch it"
    case .unreadableLibrary(let uid, let path):
      return "uid \(uid) cannot read the library \(path); make it readable"
    }
  }
}
