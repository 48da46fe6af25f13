import SwpatchBase
import SwpatchProtocol
import Testing

@testable import swpatch

/// How an attach report shows where the library's undefined symbols bind.
@Suite struct ExternsTextTests {
  func report(dryRun: Bool) -> OperationReport {
    var report = OperationReport(
      pid: 42, operation: "attach", patch: "p", dryRun: dryRun, policy: "stack", functions: [], plan: [],
      alsoDisabled: [], stoppedMicroseconds: 10, notes: [])
    report.externs = [
      .init(name: "printf", bindsTo: "loader", object: "libc.so.6", address: nil),
      .init(name: "scale", bindsTo: "swpatch", object: "app", address: Address(0x5555_0000_1190)),
      .init(name: "__gmon_start__", bindsTo: "nowhere", object: nil, address: nil),
    ]
    return report
  }

  @Test func aDryRunListsEveryUndefinedSymbolWithWhereItBinds() {
    let text = Output.describe(report(dryRun: true))
    #expect(text.contains("  externs:\n"))
    #expect(text.contains("    printf          loader: libc.so.6\n"))
    #expect(text.contains("    scale           swpatch: app 0x555500001190\n"))
    #expect(text.contains("    __gmon_start__  nowhere (weak, NULL)"))
  }

  @Test func anAttachListsOnlyWhatSwpatchBound() {
    let text = Output.describe(report(dryRun: false))
    #expect(text.contains("    scale  swpatch: app 0x555500001190\n"))
    #expect(!text.contains("printf") && !text.contains("__gmon_start__"))
  }
}
