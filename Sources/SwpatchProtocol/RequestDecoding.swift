import FoundationEssentials
import Glibc

extension Request {
  /// Parses a request line, with an error that says what is wrong with it.
  public static func decode(_ line: Data) throws(ErrorBody) -> Request {
    guard let head = try? JSONDecoder().decode(RequestHead.self, from: line) else {
      throw ErrorBody(code: "bad_request", message: "the request is not a JSON object on one line")
    }
    if let key = DuplicateKeys.first(in: line) {
      throw ErrorBody(
        code: "bad_request", message: "the request has the key '\(key)' twice; each key may appear once")
    }
    guard let version = head.v else {
      throw ErrorBody(code: "bad_request", message: "the request has no protocol version 'v'")
    }
    guard version == DaemonProtocol.version else {
      throw ErrorBody(
        code: "bad_version",
        message: "protocol version \(version) is not supported; this daemon speaks \(DaemonProtocol.version)")
    }
    guard let op = head.op else {
      throw ErrorBody(code: "bad_request", message: "the request has no operation 'op'")
    }
    guard RequestOp(rawValue: op) != nil else {
      let known = RequestOp.allCases.map(\.rawValue).joined(separator: ", ")
      throw ErrorBody(code: "unknown_operation", message: "unknown operation '\(op)'; known: \(known)")
    }
    do {
      let request = try JSONDecoder().decode(Request.self, from: line)
      try request.checkFields()
      return request
    } catch let error as ErrorBody {
      throw error
    } catch {
      throw ErrorBody(code: "bad_request", message: "malformed '\(op)' request: \(describe(error))")
    }
  }
}

extension Request {
  /// The fields each operation needs.
  func checkFields() throws(ErrorBody) {
    func missing(_ field: String) -> ErrorBody {
      ErrorBody(code: "bad_request", message: "'\(op.rawValue)' needs '\(field)'")
    }
    // A pid is used with kill, /proc and ptrace: 0 and negatives mean process groups
    // or nothing there, so only a real process id passes.
    if let pid, pid < 1 {
      throw ErrorBody(
        code: "bad_request", message: "'pid' must be a process id (an integer >= 1), not \(pid)")
    }
    if let allOf {
      guard allOf.hasPrefix("/") else {
        throw ErrorBody(code: "bad_request", message: "'all_of' must be an absolute path, not '\(allOf)'")
      }
      guard pid == nil else {
        throw ErrorBody(code: "bad_request", message: "give either 'pid' or 'all_of', not both")
      }
    }
    if ruleOnly == true && (op != .attach || allOf == nil) {
      throw ErrorBody(code: "bad_request", message: "'rule_only' needs an 'attach' with 'all_of'")
    }
    switch op {
    case .attach:
      guard pid != nil || allOf != nil else { throw missing("pid") }
      guard patch != nil else { throw missing("patch") }
      guard let patchPath, patchPath.hasPrefix("/") else { throw missing("patch_path (absolute)") }
    case .enable, .disable, .remove:
      guard pid != nil || allOf != nil else { throw missing("pid") }
      guard let patchID else { throw missing("patch_id") }
      guard patchID.count <= DaemonProtocol.maxPatchIDLength else {
        throw ErrorBody(
          code: "bad_request",
          message:
            "'patch_id' is \(patchID.count) characters long; patch ids are at most \(DaemonProtocol.maxPatchIDLength)"
        )
      }
    case .status, .log, .ping, .rules:
      break
    }
  }
}

/// A decoding error in one line: the path to the bad field and what was wrong.
private func describe(_ error: any Error) -> String {
  guard let error = error as? DecodingError else { return "\(error)" }
  func path(_ context: DecodingError.Context) -> String {
    context.codingPath.map(\.stringValue).joined(separator: ".")
  }
  switch error {
  case .keyNotFound(let key, _): return "missing '\(key.stringValue)'"
  case .typeMismatch(_, let context), .valueNotFound(_, let context):
    return "'\(path(context))' has the wrong type"
  case .dataCorrupted(let context):
    // Our own checks (OperationOptions' bounds) say what a valid value is.
    return "'\(path(context))' is invalid: \(context.debugDescription)"
  @unknown default: return "\(error)"
  }
}

/// The two fields every request is first checked for, each nil when absent or of
/// another type, so that the error can say which one is wrong.
private struct RequestHead: Decodable {
  let v: Int?
  let op: String?

  enum CodingKeys: String, CodingKey { case v, op }

  init(from decoder: any Decoder) throws {
    // Only a JSON object gets this far: any other value has no keyed container.
    let container = try decoder.container(keyedBy: CodingKeys.self)
    v = try? container.decode(Int.self, forKey: .v)
    op = try? container.decode(String.self, forKey: .op)
  }
}
