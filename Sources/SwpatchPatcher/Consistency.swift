import FoundationEssentials
import Glibc
import SwpatchBase
import SwpatchProcess
import SwpatchProtocol
import SwpatchRegistry
import SwpatchSymbols

/// A stretch of code no thread may be executing when the switch happens: a version's
/// body, or its cold part (`name.cold`, which gcc splits out of the body and jumps to).
struct GuardedCode: Equatable {
  var version: LeavingVersion
  var symbol: String
  var range: Range<UInt64>

  /// How a blocker names it: the function, and the part when it is not the body.
  var label: String { symbol == version.name ? symbol : "\(symbol) (part of \(version.name))" }
}

/// A thread found inside guarded code, or one whose stack could not be read at all
/// (not the registry's `StackBlocker`, a hook that blocks a disable under `stack`).
enum BlockingThread: Equatable, CustomStringConvertible {
  case inside(tid: Int32, function: String, frame: StackFrame)
  case unreadable(tid: Int32, reason: String)

  var description: String {
    switch self {
    case .inside(let tid, let function, let frame):
      "thread \(tid) is inside \(function) (frame #\(frame.index) at \(hexAddress(frame.pc)))"
    case .unreadable(let tid, let reason):
      "thread \(tid)'s stack cannot be unwound (\(reason))"
    }
  }
}

/// Thrown inside the stop when a thread blocks the switch; the retry loop catches it
/// after the target has been resumed and nothing changed.
struct StackBlocked: Error {
  var blocker: BlockingThread
}

/// The stack check of one attempt: the guarded code, and the unwinding in the stop.
final class StackCheck {
  let guarded: [GuardedCode]
  /// What the report should say about the check that passed: threads whose stacks
  /// were read only partly, so that frames below were not checked.
  private(set) var notes: [String] = []

  /// The code of every version `plan` switches away from. Sizes come from the symbol
  /// tables of the objects mapped in the target (the patch library's own for a
  /// replacement); a version whose size is unknown cannot be checked, so it is refused.
  init(plan: Plan, state: TargetState, image: ProcessImage) throws(PatchError) {
    var guarded: [GuardedCode] = []
    for version in state.versionsLeaving(plan) {
      guard let symbol = image.function(named: version.name, at: version.address), symbol.size > 0 else {
        throw .unknownFunctionSize(function: version.name, address: version.address)
      }
      let cold = image.clones(of: symbol.name, in: symbol.object).filter {
        $0.name == symbol.name + ".cold" && $0.objectPath == symbol.objectPath && $0.size > 0
      }
      for part in [symbol] + cold {
        guarded.append(
          GuardedCode(version: version, symbol: part.name, range: part.address..<part.address + part.size))
      }
    }
    self.guarded = guarded
  }

  /// Unwinds every thread of the stopped target and returns the first frame inside
  /// guarded code (innermost first: the frame that will run soonest), or nil. Runs on
  /// the tracer thread, inside the stop.
  func firstBlocker(in target: StoppedTarget) throws -> BlockingThread? {
    guard !guarded.isEmpty else { return nil }
    let stacks = try StackUnwinder.stacks(of: target)
    for stack in stacks {
      for frame in stack.frames {
        if let code = guarded.first(where: { $0.range.contains(frame.address) }) {
          return .inside(tid: stack.tid, function: code.label, frame: frame)
        }
      }
    }
    return unreadableStack(stacks)
  }

  /// A thread whose unwind stops at its innermost frame proves nothing (a live thread
  /// always has callers; it may be in code with no CFI, such as a trampoline slot), so
  /// it blocks, and may well be readable on the next attempt. Deeper down, an early
  /// stop is how some systems end every stack (libdwfl says so), so the frames read
  /// are what is checked, and the notes say which threads were read only partly.
  func unreadableStack(_ stacks: [ThreadStack]) -> BlockingThread? {
    for stack in stacks where stack.frames.count <= 1 {
      if let reason = stack.stoppedEarly ?? (stack.frames.isEmpty ? "no frames" : nil) {
        return .unreadable(tid: stack.tid, reason: reason)
      }
    }
    let partial = stacks.filter { $0.stoppedEarly != nil }
    if let first = partial.first {
      let list = partial.map { "\($0.tid) (to frame #\($0.frames.count - 1))" }.joined(separator: ", ")
      notes = [
        "stack check: threads \(list) were unwound only partly (\(first.stoppedEarly!)); their deeper frames were not checked"
      ]
    }
    return nil
  }
}

extension Engine {
  /// Runs `attempt` until no thread blocks it or `retryFor` seconds have passed. Each
  /// attempt is a whole operation (lock, plan, stop, check, write); a blocked one has
  /// resumed the target and released the registry lock before this sleeps, with backoff
  /// from 1 ms doubling to 100 ms, so nothing waits on us meanwhile.
  func retryingWhileBlocked(
    _ options: OperationOptions, _ attempt: () throws -> OperationReport
  ) throws -> OperationReport {
    let deadline = ContinuousClock.now + options.retryBound
    var pause = Duration.milliseconds(1)
    var retries = 0
    while true {
      do {
        var report = try attempt()
        report.consistency = options.consistency.rawValue
        report.retries = retries
        return report
      } catch let blocked as StackBlocked {
        let now = ContinuousClock.now
        guard now < deadline else {
          throw PatchError.stackCheckTimedOut(
            blocker: "\(blocked.blocker)", retriedFor: options.retryBound.seconds, retries: retries)
        }
        if retries == 0 {
          progress?(
            "waiting: \(blocked.blocker); retrying for up to \(formatSeconds(options.retryBound.seconds)) s")
        }
        OSThread.sleep(min(pause, deadline - now))
        retries += 1
        pause = min(pause * 2, .milliseconds(100))
      }
    }
  }
}

/// `5`, `2.5`, `0.001`: seconds as people write them.
func formatSeconds(_ seconds: Double) -> String {
  seconds == seconds.rounded() && abs(seconds) < 1e15 ? String(Int(seconds)) : String(seconds)
}
