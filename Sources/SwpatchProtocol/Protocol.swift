import FoundationEssentials
import Glibc
import SwpatchRegistry

/// The daemon's wire protocol (docs/protocol.md): one JSON request per line, one JSON
/// response per line, over a Unix-domain stream socket.
public enum DaemonProtocol {
  /// Bumped when a request or response changes incompatibly.
  public static let version = 1
  /// A request line longer than this closes the connection.
  public static let maxLineBytes = 1 << 20
  /// The longest patch id, in patch files and requests alike.
  public static let maxPatchIDLength = 128
}

/// What a client asks for.
public enum RequestOp: String, Codable, Sendable, CaseIterable {
  case attach, enable, disable, remove, status, log, ping, rules

  /// Operations that change a target and the registry, and go through the worker.
  public var changesState: Bool {
    self == .attach || self == .enable || self == .disable || self == .remove
  }
}

/// One request line. Fields that an operation does not use are ignored.
public struct Request: Codable, Sendable {
  /// Protocol version the client speaks.
  public var v: Int
  public var op: RequestOp
  public var pid: Int32?
  /// attach: the patch file's text (the client reads it, so the daemon never opens
  /// a file on a client's behalf) and its absolute path (anchors a relative `library`).
  public var patch: String?
  public var patchPath: String?
  /// enable/disable/remove: the patch id.
  public var patchID: String?
  public var policy: DisablePolicy?
  public var options: OperationOptions?
  /// attach/enable/disable/status: every process of this file (an absolute path to an
  /// ELF executable or shared library) instead of one `pid`.
  public var allOf: String?
  /// attach with `all_of`: record the rule only, patch no running process.
  public var ruleOnly: Bool?

  public init(
    op: RequestOp, pid: Int32? = nil, patch: String? = nil, patchPath: String? = nil,
    patchID: String? = nil, policy: DisablePolicy? = nil, options: OperationOptions? = nil,
    allOf: String? = nil, ruleOnly: Bool? = nil
  ) {
    self.allOf = allOf
    self.ruleOnly = ruleOnly
    self.v = DaemonProtocol.version
    self.op = op
    self.pid = pid
    self.patch = patch
    self.patchPath = patchPath
    self.patchID = patchID
    self.policy = policy
    self.options = options
  }

  enum CodingKeys: String, CodingKey {
    case v, op, pid, patch, policy, options
    case patchPath = "patch_path"
    case patchID = "patch_id"
    case allOf = "all_of"
    case ruleOnly = "rule_only"
  }
}

/// A refusal or failure as it crosses the socket: a stable code and one line for people.
public struct ErrorBody: Codable, Sendable, Error, CustomStringConvertible {
  public var code: String
  public var message: String

  public init(code: String, message: String) {
    self.code = code
    self.message = message
  }

  public var description: String { message }
}

/// One response line: `result` when `ok`, else `error`.
public struct Response<Result: Codable & Sendable>: Codable, Sendable {
  public var v: Int
  public var ok: Bool
  public var result: Result?
  public var error: ErrorBody?

  public static func success(_ result: Result) -> Response {
    Response(v: DaemonProtocol.version, ok: true, result: result, error: nil)
  }

  public static func failure(_ error: ErrorBody) -> Response {
    Response(v: DaemonProtocol.version, ok: false, result: nil, error: error)
  }
}

/// A response with no result, for errors that happen before the operation is known.
public struct NoResult: Codable, Sendable {}

/// `status`: the registry's report, and targets dropped since the last status because
/// they exited. The keys are those of `swpatch status --json`.
public struct StatusResult: Codable, Sendable {
  public var targets: [TargetStatus]
  public var dropped: [Int32]
  /// The rules (`attach --all-of`), with the new processes each could not patch; left
  /// out when there are none.
  public var rules: [RuleStatus]?

  public init(targets: [TargetStatus], dropped: [Int32], rules: [RuleStatus]? = nil) {
    self.targets = targets
    self.dropped = dropped
    self.rules = rules
  }
}

/// `ping`: who answers.
public struct PingResult: Codable, Sendable {
  public var pid: Int32
  public var version: Int
  public var stateDir: String

  public init(pid: Int32, version: Int, stateDir: String) {
    self.pid = pid
    self.version = version
    self.stateDir = stateDir
  }

  enum CodingKeys: String, CodingKey {
    case pid, version
    case stateDir = "state_dir"
  }
}

/// Encoding shared by both ends: sorted keys, so lines are stable and diffable.
public enum WireCoding {
  public static func encode<T: Encodable>(_ value: T) -> Data {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
    return (try? encoder.encode(value)) ?? Data(#"{"ok":false}"#.utf8)
  }

  public static func line<T: Encodable>(_ value: T) -> Data {
    encode(value) + Data([0x0a])
  }
}
