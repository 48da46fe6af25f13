/// An error that names itself with a stable code: the `code` of `--json` errors and of
/// the daemon's error responses (docs/cli.md). Every error type of swpatch adopts it and
/// gives each of its cases a code in an exhaustive switch, so a new case cannot reach an
/// operator without one. `description` is the one line for people, which may be
/// reworded; `code` may not.
public protocol CodedError: Error, CustomStringConvertible {
  var code: String { get }
}

/// The stable code of any error: its own, or `error` for one that has none (an error
/// from a library swpatch does not wrap).
public func errorCode(_ error: any Error) -> String {
  (error as? any CodedError)?.code ?? "error"
}
