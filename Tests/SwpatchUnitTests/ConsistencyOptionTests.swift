import Foundation
import SwpatchPatcher
import SwpatchProtocol
import Testing

/// `--retry-for` parsing and the options' wire form: pure, no process involved.
@Suite struct ConsistencyOptionTests {
  @Test func retryForAcceptsSecondsMillisecondsAndPlainNumbers() {
    #expect(OperationOptions.seconds(parsing: "5s") == 5)
    #expect(OperationOptions.seconds(parsing: "500ms") == 0.5)
    #expect(OperationOptions.seconds(parsing: "2.5") == 2.5)
    #expect(OperationOptions.seconds(parsing: "1m") == 60)
    #expect(OperationOptions.seconds(parsing: "0") == 0)
    for bad in ["", "s", "-1", "abc", "5x", "1e3", "inf", "nan"] {
      #expect(OperationOptions.seconds(parsing: bad) == nil, "\(bad)")
    }
  }

  @Test func optionsWithoutTheNewKeysDecodeToStackAndFiveSeconds() throws {
    let old = try JSONDecoder().decode(OperationOptions.self, from: Data(#"{"dry_run": true}"#.utf8))
    #expect(old.consistency == .stack)
    #expect(old.retryFor == 5)
    let given = try JSONDecoder().decode(
      OperationOptions.self, from: Data(#"{"consistency": "entry", "retry_for": 0.25}"#.utf8))
    #expect(given == OperationOptions(consistency: .entry, retryFor: 0.25))
    // Whatever a request carries, the engine's wait stays bounded and never traps.
    #expect(OperationOptions(retryFor: -1).retryBound == .zero)
    #expect(OperationOptions(retryFor: .infinity).retryBound == .zero)
    #expect(OperationOptions(retryFor: 1e30).retryBound == .seconds(600))
    #expect(OperationOptions(retryFor: 0.25).retryBound == .milliseconds(250))
    let encoded = String(decoding: try JSONEncoder().encode(given), as: UTF8.self)
    #expect(encoded.contains(#""retry_for":0.25"#) && encoded.contains(#""consistency":"entry""#))
  }
}
