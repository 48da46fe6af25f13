import SwpatchBase
import SwpatchProtocol

extension ErrorBody: CodedError {}

extension DaemonStartError: CodedError {
  public var code: String { "daemon_start" }
}
