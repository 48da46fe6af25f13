import Foundation
import SwpatchPatcher
import SwpatchProtocol
import Testing

/// The duplicate-key scan behind patch files and protocol requests (no root, no fixtures).
@Suite struct DuplicateKeysTests {
  func scan(_ text: String) -> String? { DuplicateKeys.first(in: Array(text.utf8)) }

  @Test func distinctKeysPass() {
    #expect(
      scan(#"{"id":"a","library":"b","functions":[{"old":"x","new":"y"},{"old":"x","new":"z"}]}"#) == nil)
    #expect(scan(#"[{"a":1},{"a":2}]"#) == nil)
    #expect(scan(#"{"a":{"a":{"a":1}}}"#) == nil)
    #expect(scan("{}") == nil)
  }

  @Test func aRepeatedTopLevelKeyIsNamed() {
    #expect(scan(#"{"library":"libfix.so","library":"/nonexistent.so"}"#) == "library")
  }

  @Test func aRepeatedNestedKeyIsNamedWithItsPath() {
    #expect(scan(#"{"functions":[{"old":"a","new":"b"},{"old":"a","old":"c"}]}"#) == "functions[1].old")
    #expect(scan(#"{"build_ids":{"loop":"ab","loop":"cd"}}"#) == "build_ids.loop")
    #expect(scan(#"{"v":1,"options":{"force":true, "force" : false}}"#) == "options.force")
  }

  @Test func escapedKeysAreComparedUnescaped() {
    #expect(scan(#"{"id":"a","\u0069d":"b"}"#) == "id")
    #expect(scan(#"{"a\/b":1,"a/b":2}"#) == "a/b")
    #expect(scan(#"{"\ud83d\ude00":1,"😀":2}"#) == "😀")
    #expect(scan(#"{"a\"b":1,"a\\b":2}"#) == nil)
  }

  @Test func bracesAndQuotesInsideStringsAreNotStructure() {
    #expect(scan(#"{"patch":"{\"id\":1,\"id\":2}","id":"x"}"#) == nil)
    #expect(scan(#"{"a":"}{,[","b":"\"","a":3}"#) == "a")
    #expect(scan(#"{"a":"x:\"y\",\"a\":1"}"#) == nil)
  }

  @Test func keysInSiblingObjectsAreIndependent() {
    #expect(scan(#"{"x":{"k":1},"y":{"k":2}}"#) == nil)
    #expect(scan(#"{"x":{"k":1},"k":2}"#) == nil)
    #expect(scan(#"{"x":{"k":1},"x":2}"#) == "x")
  }

  @Test func malformedInputNeverTraps() {
    for text in [#"{"a"#, #"{"a":"\u12"#, "\"\\", "}}]]", #"{"a":1,,"a":2"#, #"{"\ud800":1}"#] {
      _ = scan(text)
    }
  }
}
