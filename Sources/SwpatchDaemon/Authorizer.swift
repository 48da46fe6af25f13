import Foundation
import Glibc
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
/// dumpable (its /proc entry is the caller's, not root's), with a library the caller
/// can read. A refusal changes nothing.
enum Authorizer {
  static func mayChange(pid: Int32, library: String?, caller: PeerCredentials) throws(ErrorBody) {
    guard !caller.isRoot else { return }
    guard let owner = TargetProcess.credentials(of: pid) else {
      throw ErrorBody(code: "no_such_process", message: "no process with pid \(pid); check the pid with `ps`")
    }
    let ownsIt =
      !owner.uids.isEmpty && owner.uids.allSatisfy { $0 == caller.uid }
      && !owner.gids.isEmpty && owner.gids.allSatisfy { $0 == owner.gids[0] }
    guard ownsIt else {
      throw ErrorBody(
        code: "permission_denied",
        message:
          "uid \(caller.uid) may not patch pid \(pid) (uids \(owner.uids.map(String.init).joined(separator: ","))); only root may patch another user's or a set-uid/set-gid process"
      )
    }
    guard owner.procOwner == caller.uid else {
      throw ErrorBody(
        code: "permission_denied",
        message: "pid \(pid) is not dumpable (set-uid, set-gid or prctl); only root may patch it")
    }
    if let library { try checkReadable(library, by: caller) }
  }

  /// A user must not get a file they cannot read loaded into a process they control.
  private static func checkReadable(_ path: String, by caller: PeerCredentials) throws(ErrorBody) {
    var info = stat()
    guard stat(path, &info) == 0 else { return }  // the engine reports a missing library
    let mode = info.st_mode
    let readable =
      (info.st_uid == caller.uid && mode & S_IRUSR != 0)
      || (info.st_gid == caller.gid && mode & S_IRGRP != 0) || mode & S_IROTH != 0
    guard readable else {
      throw ErrorBody(
        code: "permission_denied",
        message: "uid \(caller.uid) cannot read the library \(path); make it readable")
    }
  }
}
