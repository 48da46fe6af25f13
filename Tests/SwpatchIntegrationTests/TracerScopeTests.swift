import SwpatchProcess
import SwpatchSymbols
import Testing

/// `TracerThread.withStopped` is the only way to hold a target: it always lets it go,
/// and what it handed out is harmless afterwards.
@Suite(.serialized, .needsRoot, .needsFixtures) struct TracerScopeTests {
  struct Failure: Error {}

  @Test func aTargetIsResumedWhenTheScopeThrows() throws {
    let ws = Workspace()
    let target = try ParkedFixture(ws)
    #expect(throws: Failure.self) {
      try TracerThread.shared.withStopped(target.pid) { stopped in
        #expect(!stopped.threads.isEmpty)
        throw Failure()
      }
    }
    #expect(everyThreadIsUntraced(target.pid))
    #expect(target.fixture.keepsRunning())
  }

  @Test func aTargetThatEscapesItsScopeCanNoLongerBeTouched() throws {
    let ws = Workspace()
    let target = try ParkedFixture(ws)
    let escaped = try TracerThread.shared.withStopped(target.pid) { $0 }
    try TracerThread.shared.run {
      #expect(throws: ProcessError.self) { try escaped.read(at: 0x1000, count: 1) }
      #expect(throws: ProcessError.self) { try escaped.registers(of: target.pid) }
      #expect(throws: SymbolError.self) { try StackUnwinder.stacks(of: escaped) }
      do {
        try escaped.checkHeld()
        Issue.record("an escaped target still counts as held")
      } catch ProcessError.notStopped(let pid) {
        #expect(pid == target.pid)
      } catch {
        Issue.record("unexpected \(error)")
      }
    }
    #expect(target.fixture.keepsRunning())
  }
}
