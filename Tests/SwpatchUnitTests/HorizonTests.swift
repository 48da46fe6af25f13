import Glibc
import Testing

@testable import SwpatchProcess

/// The horizon of a rule for new processes: start times are 10 ms clock ticks, so a
/// process that starts right after a rule is recorded often shares its tick.
@Suite struct HorizonTests {
  @Test func uptimeIsReadInWholeTicksRoundedDownLikeStartTimes() {
    // 12345.67 * 100 is 1234566.9999... as a Double.
    #expect(ProcessScan.ticks(uptime: "12345.67", perSecond: 100) == 1_234_567)
    #expect(ProcessScan.ticks(uptime: "3605.76", perSecond: 100) == 360_576)
    #expect(ProcessScan.ticks(uptime: "10.5", perSecond: 100) == 1050)
    #expect(ProcessScan.ticks(uptime: "7", perSecond: 100) == 700)
    #expect(ProcessScan.ticks(uptime: "1.99", perSecond: 1000) == 1990)
    #expect(ProcessScan.ticks(uptime: "x", perSecond: 100) == 0)
  }

  @Test func aProcessStartedInTheHorizonsTickIsNewUnlessItWasThere() {
    let horizon = ProcessScan.Horizon(ticks: 500, bootID: "b", startedInTick: [41])
    #expect(horizon.isBefore(pid: 42, startTime: 500, bootID: "b"))
    #expect(!horizon.isBefore(pid: 41, startTime: 500, bootID: "b"))
    #expect(horizon.isBefore(pid: 41, startTime: 501, bootID: "b"))
    #expect(!horizon.isBefore(pid: 43, startTime: 499, bootID: "b"))
    #expect(horizon.isBefore(pid: 43, startTime: 499, bootID: "another boot"))
  }

  @Test func theHorizonNamesTheProcessesOfItsTickThatAreThere() {
    let horizon = ProcessScan.horizon()
    #expect(horizon.ticks > 0)
    for pid in horizon.startedInTick { #expect(ProcessScan.startTicks(of: pid) == horizon.ticks) }
    #expect(ProcessScan.startTicks(of: getpid()).map { $0 <= horizon.ticks } == true)
  }
}
