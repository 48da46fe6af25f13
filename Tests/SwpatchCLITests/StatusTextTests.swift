import Foundation
import SwpatchRegistry
import Testing

@testable import swpatch

/// How `swpatch status` prints a report: the CLI's own rendering of the wire type.
@Suite struct StatusTextTests {
  static let report = #"""
    {"targets":[{"pid":4242,"start_time":7,"executable":"/srv/app","policy":"stack","inherited_from":4200,
     "hooks":[{"function":"foo","object":"app","old_addr":"0x55d1c0a01139","slot":"0x55d1c0a00040",
       "stack":[{"patch":"p3","replacement":"foo_p3","address":"0x7f0000003000"},
                {"patch":"p1","replacement":"foo_p1","address":"0x7f0000001000"},{"original":true}]}],
     "patches":[{"id":"p1","state":"enabled","library":"/l1.so","functions":["foo"],"replace":false,"requires":[]},
                {"id":"p2","state":"disabled","library":"/l2.so","functions":["foo"],"replace":false,"requires":[]},
                {"id":"p3","state":"enabled","library":"/l3.so","functions":["foo"],"replace":false,"requires":[]}]}]}
    """#

  @Test func statusTextStartsWithTheTargetAndMarksTheActiveReplacement() throws {
    let report = try JSONDecoder().decode(StatusReport.self, from: Data(Self.report.utf8))
    #expect(
      renderStatusText(report).split(separator: "\n").map(String.init) == [
        "pid 4242  /srv/app  policy=stack  inherited from pid 4200 (fork)",
        "  foo  app  0x55d1c0a01139",
        "    * p3  foo_p3  0x7f0000003000",
        "      p1  foo_p1  0x7f0000001000",
        "      (original)",
        "  patches: p1 enabled, p2 disabled, p3 enabled",
        "  note: disabled patches stay loaded (threads may still return into their code)",
      ])
    #expect(renderStatusText(StatusReport(targets: [TargetState]())) == "no patched targets")
  }

  @Test func eachEntryWithAPrevSaysWhatItCalls() throws {
    let text = Self.report
      .replacingOccurrences(
        of: #""address":"0x7f0000003000"}"#, with: #""address":"0x7f0000003000","prev":"0x7f0000001000"}"#
      )
      .replacingOccurrences(
        of: #""address":"0x7f0000001000"}"#, with: #""address":"0x7f0000001000","prev":"original"}"#)
    let report = try JSONDecoder().decode(StatusReport.self, from: Data(text.utf8))
    let lines = renderStatusText(report).split(separator: "\n").map(String.init)
    #expect(lines.contains("    * p3  foo_p3  0x7f0000003000  prev -> p1 foo_p1"), "\(lines)")
    #expect(lines.contains("      p1  foo_p1  0x7f0000001000  prev -> original"), "\(lines)")
  }
}
