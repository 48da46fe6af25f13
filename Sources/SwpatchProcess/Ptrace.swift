import CSwpatchShim
import Glibc
import SystemPackage

/// The ptrace requests swpatch uses, typed so that raw numbers stay in this file.
enum PtraceRequest: Int32 {
  case peekData = 2
  case cont = 7
  case getRegs = 12
  case setRegs = 13
  case detach = 17
  case syscall = 24
  case getEventMsg = 0x4201
  case getSigInfo = 0x4202
  case getRegSet = 0x4204
  case setRegSet = 0x4205
  case seize = 0x4206
  case interrupt = 0x4207
  case listen = 0x4208
  case setOptions = 0x4200

  var name: String {
    switch self {
    case .peekData: "PEEKDATA"
    case .cont: "CONT"
    case .getRegs: "GETREGS"
    case .setRegs: "SETREGS"
    case .detach: "DETACH"
    case .syscall: "SYSCALL"
    case .getEventMsg: "GETEVENTMSG"
    case .getSigInfo: "GETSIGINFO"
    case .getRegSet: "GETREGSET"
    case .setRegSet: "SETREGSET"
    case .seize: "SEIZE"
    case .interrupt: "INTERRUPT"
    case .listen: "LISTEN"
    case .setOptions: "SETOPTIONS"
    }
  }
}

/// Thin typed wrappers over the shim: errno never leaks past this file.
enum Ptrace {
  @discardableResult
  static func call(_ request: PtraceRequest, _ tid: Int32, _ addr: UInt64 = 0, _ data: UInt64 = 0)
    throws(ProcessError) -> Int
  {
    var err: Int32 = 0
    let r = swp_ptrace(request.rawValue, tid, addr, data, &err)
    if r == -1 && err != 0 {
      throw .ptrace(request: request.name, tid: tid, errno: Errno(rawValue: err))
    }
    return r
  }

  /// PTRACE_GETEVENTMSG: for a clone event stop, the new thread's id.
  static func eventMessage(_ tid: Int32) throws(ProcessError) -> UInt64 {
    var message: UInt64 = 0
    var err: Int32 = 0
    let r = withUnsafeMutablePointer(to: &message) { p in
      swp_ptrace(PtraceRequest.getEventMsg.rawValue, tid, 0, UInt64(UInt(bitPattern: p)), &err)
    }
    if r == -1 { throw .ptrace(request: "GETEVENTMSG", tid: tid, errno: Errno(rawValue: err)) }
    return message
  }

  static func getRegisters(_ tid: Int32) throws(ProcessError) -> user_regs_struct {
    var regs = user_regs_struct()
    var err: Int32 = 0
    let r = withUnsafeMutablePointer(to: &regs) { p in
      swp_ptrace(PtraceRequest.getRegs.rawValue, tid, 0, UInt64(UInt(bitPattern: p)), &err)
    }
    if r == -1 { throw .ptrace(request: "GETREGS", tid: tid, errno: Errno(rawValue: err)) }
    return regs
  }

  static func setRegisters(_ tid: Int32, _ regs: user_regs_struct) throws(ProcessError) {
    var copy = regs
    var err: Int32 = 0
    let r = withUnsafeMutablePointer(to: &copy) { p in
      swp_ptrace(PtraceRequest.setRegs.rawValue, tid, 0, UInt64(UInt(bitPattern: p)), &err)
    }
    if r == -1 { throw .ptrace(request: "SETREGS", tid: tid, errno: Errno(rawValue: err)) }
  }

  /// The thread's whole extended FPU/SIMD state (XSAVE layout), so a remote call that
  /// clobbers xmm/ymm registers can be undone exactly.
  static func getExtendedState(_ tid: Int32) throws(ProcessError) -> [UInt8] {
    var buffer = [UInt8](repeating: 0, count: 16384)
    var len = buffer.count
    var err: Int32 = 0
    let r = buffer.withUnsafeMutableBytes { b in
      swp_ptrace_regset(
        PtraceRequest.getRegSet.rawValue, tid, Int32(SWP_NT_X86_XSTATE), b.baseAddress, &len, &err)
    }
    if r == -1 { throw .ptrace(request: "GETREGSET", tid: tid, errno: Errno(rawValue: err)) }
    return Array(buffer.prefix(len))
  }

  static func setExtendedState(_ tid: Int32, _ state: [UInt8]) throws(ProcessError) {
    var copy = state
    var len = copy.count
    var err: Int32 = 0
    let r = copy.withUnsafeMutableBytes { b in
      swp_ptrace_regset(
        PtraceRequest.setRegSet.rawValue, tid, Int32(SWP_NT_X86_XSTATE), b.baseAddress, &len, &err)
    }
    if r == -1 { throw .ptrace(request: "SETREGSET", tid: tid, errno: Errno(rawValue: err)) }
  }
}

/// One wait status, decoded.
enum WaitEvent: Equatable {
  /// The thread is gone (exited or killed).
  case gone
  /// A ptrace event stop: PTRACE_EVENT_STOP (interrupt or group stop), clone, exec...
  case event(Int32, signal: Int32)
  /// syscall-enter or syscall-exit stop (PTRACE_O_TRACESYSGOOD sets bit 0x80).
  case syscallStop
  /// signal-delivery stop: the signal is withheld until the tracer passes it on.
  case signal(Int32)

  init(status: Int32) {
    if swp_wifexited(status) != 0 || swp_wifsignaled(status) != 0 {
      self = .gone
      return
    }
    let sig = swp_wstopsig(status)
    let event = swp_wptrace_event(status)
    if event != 0 {
      self = .event(event, signal: sig)
    } else if sig == SIGTRAP | 0x80 {
      self = .syscallStop
    } else {
      self = .signal(sig)
    }
  }

  /// Waits for the next event of one thread. `nil` means nothing yet (only with `noHang`).
  static func next(_ tid: Int32, noHang: Bool = false) throws(ProcessError) -> WaitEvent? {
    var status: Int32 = 0
    var err: Int32 = 0
    let r = swp_waitpid(tid, &status, noHang ? WNOHANG : 0, &err)
    if r == 0 { return nil }
    if r < 0 {
      if err == ECHILD { return .gone }
      throw .ptrace(request: "waitpid", tid: tid, errno: Errno(rawValue: err))
    }
    return WaitEvent(status: status)
  }
}
