import CElfDw
import FoundationEssentials
import Glibc
import SwpatchProcess

/// One frame of a thread's stack, innermost first (`index` 0).
public struct StackFrame: Sendable, Equatable {
  public let index: Int
  public let pc: UInt64
  /// True when `pc` is where the thread is executing (the innermost frame, a signal
  /// frame); false when it is a return address.
  public let isActivation: Bool
  /// The stack pointer in this frame, as CFI recovers it (the CFA of the frame below
  /// it, the callee, for every frame but the innermost); nil when libdwfl cannot say.
  public let stackPointer: UInt64?

  public init(index: Int, pc: UInt64, isActivation: Bool, stackPointer: UInt64? = nil) {
    self.index = index
    self.pc = pc
    self.isActivation = isActivation
    self.stackPointer = stackPointer
  }

  /// An address inside the function this frame is running: a return address may point
  /// just past the function when its last instruction is the call, so step back one.
  public var address: UInt64 { isActivation ? pc : pc &- 1 }
}

/// The frames of one thread, as far as libdwfl could unwind them.
public struct ThreadStack: Sendable, Equatable {
  public let tid: Int32
  public let frames: [StackFrame]
  /// Why unwinding stopped before an outermost frame with no caller; nil when it
  /// reached one. libdwfl documents that some systems report the normal end of a stack
  /// as an error, so this is information, not a verdict.
  public let stoppedEarly: String?
}

/// Unwinds every thread of a target that process control already holds stopped, with
/// libdwfl (CFI from `.eh_frame`/`.debug_frame`, frame pointers as libdwfl's fallback).
///
/// libdwfl reads registers and memory with ptrace, so an unwinder must be created and
/// used on the `TracerThread` that holds the stop, and must not outlive the stop: it is
/// made and ended inside `stacks(of:)`, which takes the target a `withStopped` scope
/// hands out.
public final class StackUnwinder {
  public let pid: Int32
  /// The threads held in the stop: only they can be read (a main thread that has
  /// exited stays listed in /proc/PID/task).
  private let held: Set<Int32>
  private let dwfl: OpaquePointer
  /// `dwfl_begin` keeps this pointer for the life of the Dwfl: it is freed only in deinit.
  private let callbacks: UnsafeMutablePointer<Dwfl_Callbacks>

  /// Frames beyond this are not read: a corrupt stack could otherwise loop for long.
  public static let maxFrames = 1024

  /// Reports the target's modules from /proc/PID/maps and attaches libdwfl's thread
  /// state, telling it the threads are ptrace-stopped already (otherwise it would try to
  /// attach itself and every thread would fail with EPERM).
  private init(_ target: StoppedTarget) throws(SymbolError) {
    pid = target.pid
    held = Set(target.threads)
    callbacks = .allocate(capacity: 1)
    callbacks.initialize(
      to: Dwfl_Callbacks(
        find_elf: dwfl_linux_proc_find_elf, find_debuginfo: dwfl_standard_find_debuginfo,
        section_address: nil, debuginfo_path: nil))
    guard let dwfl = dwfl_begin(callbacks) else {
      callbacks.deallocate()
      throw .unwindFailed(pid: target.pid, reason: "dwfl_begin: \(Self.lastError())")
    }
    self.dwfl = dwfl
    // /proc/TID/maps of a held thread: the main thread's is empty once it has exited.
    let reported = dwfl_linux_proc_report(dwfl, target.mainThread)
    // From here on every stored property is set, so a throw runs `deinit`, which ends
    // the Dwfl and frees the callbacks: ending them here too would free them twice (a
    // target killed mid-operation fails the attach below and crashed the daemon so).
    guard reported == 0, dwfl_report_end(dwfl, nil, nil) == 0 else {
      let reason = reported > 0 ? String(cString: strerror(reported)) : Self.lastError()
      throw .unwindFailed(pid: pid, reason: "reading the modules: \(reason)")
    }
    let attached = dwfl_linux_proc_attach(dwfl, pid, true)
    guard attached == 0 else {
      let reason = attached > 0 ? String(cString: strerror(attached)) : Self.lastError()
      throw .unwindFailed(pid: pid, reason: "attaching to the threads: \(reason)")
    }
  }

  deinit {
    dwfl_end(dwfl)
    callbacks.deallocate()
  }

  /// The stack of every thread `target` holds, innermost frame first.
  public static func stacks(of target: StoppedTarget) throws(SymbolError) -> [ThreadStack] {
    do {
      try target.checkHeld()
    } catch {
      throw .unwindFailed(pid: target.pid, reason: "\(error)")
    }
    return try StackUnwinder(target).stacks()
  }

  /// The stack of every thread in /proc/PID/task, innermost frame first.
  private func stacks() throws(SymbolError) -> [ThreadStack] {
    let collector = Collector(held: held)
    let box = Unmanaged.passRetained(collector)
    defer { box.release() }
    let result = dwfl_getthreads(
      dwfl,
      { thread, arg in
        guard let thread, let arg else { return 1 }  // DWARF_CB_ABORT
        Unmanaged<Collector>.fromOpaque(arg).takeUnretainedValue().unwind(thread)
        return 0  // DWARF_CB_OK
      }, box.toOpaque())
    guard result == 0 else {
      throw .unwindFailed(pid: pid, reason: "listing the threads: \(Self.lastError())")
    }
    return collector.stacks
  }

  static func lastError() -> String {
    guard let message = dwfl_errmsg(-1) else { return "unknown libdwfl error" }
    return String(cString: message)
  }

  /// Gathers frames from libdwfl's C callbacks, which can carry no Swift context but
  /// the one pointer handed through.
  private final class Collector {
    let held: Set<Int32>
    var stacks: [ThreadStack] = []
    var frames: [StackFrame] = []
    var frameError: String?

    init(held: Set<Int32>) {
      self.held = held
    }

    func unwind(_ thread: OpaquePointer) {
      // Never unwound: libdwfl cannot read its registers, and a failed read leaves its
      // state claiming a thread is attached, which aborts the next thread's unwind.
      guard held.contains(Int32(dwfl_thread_tid(thread))) else { return }
      frames = []
      frameError = nil
      let me = Unmanaged.passUnretained(self).toOpaque()
      let result = dwfl_thread_getframes(
        thread,
        { frame, arg in
          guard let frame, let arg else { return 1 }
          return Unmanaged<Collector>.fromOpaque(arg).takeUnretainedValue().add(frame)
        }, me)
      var stoppedEarly = frameError
      if result == -1 && stoppedEarly == nil { stoppedEarly = StackUnwinder.lastError() }
      stacks.append(
        ThreadStack(tid: Int32(dwfl_thread_tid(thread)), frames: frames, stoppedEarly: stoppedEarly))
    }

    func add(_ frame: OpaquePointer) -> Int32 {
      var pc: Dwarf_Addr = 0
      var activation = false
      guard dwfl_frame_pc(frame, &pc, &activation) else {
        frameError = StackUnwinder.lastError()
        return 1
      }
      // DWARF register 7 is rsp on x86-64.
      var sp: Dwarf_Word = 0
      let known = dwfl_frame_reg(frame, 7, &sp) == 0
      frames.append(
        StackFrame(index: frames.count, pc: pc, isActivation: activation, stackPointer: known ? sp : nil))
      if frames.count >= StackUnwinder.maxFrames {
        frameError = "more than \(StackUnwinder.maxFrames) frames"
        return 1
      }
      return 0
    }
  }
}
