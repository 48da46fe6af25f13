/// The code of a per-thread transition (docs/design.md, "The per-thread transition"):
/// a code page (r-x) with a gate per cell the operation changes and a return stub per
/// unswitched thread, and a data page (rw-: the stubs write it) with the table of the
/// threads that have not switched yet.
///
/// ```
/// code page
/// +0      "SWPT" then int3          recognisable, and a stray jump traps
/// +16     gates, 96 bytes each
/// ...     stubs, 48 bytes each
/// data page
/// +0      one 8-byte TLS pointer per unswitched thread, then 0
/// ```
///
/// Nothing here needs swpatch alive: a gate reads the table, a stub switches its thread
/// with a one-byte store and returns to the real caller. Both preserve every register
/// (callers compiled with `-fipa-ra` may keep values in call-clobbered ones), only flags.
public struct TransitionPage: Equatable, Sendable {
  /// Where one changed cell's calls go: `old` for an unswitched thread, `new` otherwise.
  public struct Route: Equatable, Sendable {
    public var old: UInt64
    public var new: UInt64
    public init(old: UInt64, new: UInt64) {
      self.old = old
      self.new = new
    }
  }

  public static let size: UInt64 = 4096
  public static let magic: [UInt8] = Array("SWPT".utf8)
  static let gatesOffset: UInt64 = 16
  public static let gateSize: UInt64 = 96
  public static let stubSize: UInt64 = 48
  /// Where a stub keeps the real return address, and its table entry's address.
  static let stubReturnOffset: UInt64 = 32
  static let stubEntryOffset: UInt64 = 40

  public let base: UInt64
  /// The data page holding the table.
  public let table: UInt64
  /// The TLS pointer (`fs:0`) of each unswitched thread.
  public let threads: [UInt64]
  public let routes: [Route]
  /// The real return address of each unswitched thread's redirected frame.
  public let returns: [UInt64]

  /// Nil when the gates and stubs do not fit the code page, or the table the data page.
  public init?(base: UInt64, table: UInt64, threads: [UInt64], routes: [Route], returns: [UInt64]) {
    guard threads.count == returns.count, UInt64(threads.count + 1) * 8 <= Self.size else { return nil }
    self.base = base
    self.table = table
    self.threads = threads
    self.routes = routes
    self.returns = returns
    guard stubAddress(threads.count) <= base + Self.size else { return nil }
  }

  /// The table entry of unswitched thread `index`; its low byte becomes 1 when the
  /// thread switches.
  public func tableEntry(_ index: Int) -> UInt64 { table + UInt64(index) * 8 }
  public func gateAddress(_ index: Int) -> UInt64 { base + Self.gatesOffset + UInt64(index) * Self.gateSize }
  public func stubAddress(_ index: Int) -> UInt64 {
    gateAddress(routes.count) + UInt64(index) * Self.stubSize
  }
  /// Where stub `index` keeps the real return address (rewritten when a thread that left
  /// its frame by `longjmp` is caught again at another frame).
  public func returnCell(_ index: Int) -> UInt64 { stubAddress(index) + Self.stubReturnOffset }
  /// The code: everything from `base` up to the last stub.
  public var codeRange: Range<UInt64> { base..<stubAddress(threads.count) }

  /// Where a thread stopped in this page's code is, and what it has still to do.
  public enum Position: Equatable, Sendable {
    /// In the gate of route `route`, with `pushed` registers on its stack (rax, then
    /// rcx), and the way it goes once decided (nil: it has not looked at the table yet).
    case gate(route: Int, pushed: Int, toOld: Bool?)
    /// In stub `index`, rcx pushed or not, its table store done or not.
    case stub(index: Int, rcxPushed: Bool, switched: Bool)
  }

  /// The position of a thread at `pc`, at one of the code's instruction boundaries; nil
  /// outside the code (or anywhere else, which no thread can be).
  public func position(of pc: UInt64) -> Position? {
    guard codeRange.contains(pc), pc >= gateAddress(0) else { return nil }
    if pc < gateAddress(routes.count) {
      let route = Int((pc - gateAddress(0)) / Self.gateSize)
      switch pc - gateAddress(route) {
      case 0, 4: return .gate(route: route, pushed: 0, toOld: nil)
      case 5: return .gate(route: route, pushed: 1, toOld: nil)
      case 6, 15, 22, 26, 28, 31, 33, 37: return .gate(route: route, pushed: 2, toOld: nil)
      case 42: return .gate(route: route, pushed: 2, toOld: false)
      case 43: return .gate(route: route, pushed: 1, toOld: false)
      case 44: return .gate(route: route, pushed: 0, toOld: false)
      case 50: return .gate(route: route, pushed: 2, toOld: true)
      case 51: return .gate(route: route, pushed: 1, toOld: true)
      case 52: return .gate(route: route, pushed: 0, toOld: true)
      default: return nil
      }
    }
    let index = Int((pc - stubAddress(0)) / Self.stubSize)
    switch pc - stubAddress(index) {
    case 0: return .stub(index: index, rcxPushed: false, switched: false)
    case 1, 8: return .stub(index: index, rcxPushed: true, switched: false)
    case 11: return .stub(index: index, rcxPushed: true, switched: true)
    case 12: return .stub(index: index, rcxPushed: false, switched: true)
    default: return nil
    }
  }

  /// A table entry once its thread has switched (no TLS pointer is odd).
  public static func isSwitched(_ entry: [UInt8]) -> Bool { entry.first.map { $0 & 1 == 1 } ?? false }

  /// The code page's bytes (a whole page, int3 where nothing is).
  public var bytes: [UInt8] {
    var page = [UInt8](repeating: X86.int3, count: Int(Self.size))
    func put(_ bytes: [UInt8], at address: UInt64) {
      let at = Int(address - base)
      page.replaceSubrange(at..<at + bytes.count, with: bytes)
    }
    put(Self.magic, at: base)
    for (i, route) in routes.enumerated() { put(gate(at: gateAddress(i), route: route), at: gateAddress(i)) }
    for (i, address) in returns.enumerated() {
      put(stub(at: stubAddress(i), entry: tableEntry(i), returnTo: address), at: stubAddress(i))
    }
    return page
  }

  /// The data page's first bytes: the table, ended by 0.
  public var tableBytes: [UInt8] { threads.flatMap { X86.littleEndian($0) } + X86.littleEndian(UInt64(0)) }

  /// ```
  /// +0  endbr64                     reached by the slot's indirect jmp
  /// +4  push rax; push rcx          rax carries al for varargs, rcx an argument
  /// +6  mov rax, fs:[0]             this thread's TLS pointer
  /// +15 mov rcx, [rip + table]
  /// +22 cmp qword [rcx], 0 ; je +42 end of table: switched
  /// +28 cmp [rcx], rax ; je +50     listed: not switched
  /// +33 add rcx, 8 ; jmp +22
  /// +42 pop rcx; pop rax; jmp [rip + new]
  /// +50 pop rcx; pop rax; jmp [rip + old]
  /// +64 new, +72 old, +80 the table's address
  /// ```
  func gate(at address: UInt64, route: Route) -> [UInt8] {
    var code: [UInt8] = X86.endbr64 + [0x50, 0x51]
    code += [0x64, 0x48, 0x8b, 0x04, 0x25, 0, 0, 0, 0]
    code += [0x48, 0x8b, 0x0d] + X86.littleEndian(UInt32(80 - 22))
    code += [0x48, 0x83, 0x39, 0x00, 0x74, 0x0e]
    code += [0x48, 0x39, 0x01, 0x74, 0x11]
    code += [0x48, 0x83, 0xc1, 0x08, 0xeb, 0xef]
    code += [X86.int3, X86.int3, X86.int3]
    code += [0x59, 0x58, 0xff, 0x25] + X86.littleEndian(UInt32(64 - 50))
    code += [0x59, 0x58, 0xff, 0x25] + X86.littleEndian(UInt32(72 - 58))
    code += [X86.int3, X86.int3, X86.int3, X86.int3, X86.int3, X86.int3]
    code += X86.littleEndian(route.new) + X86.littleEndian(route.old) + X86.littleEndian(table)
    return code + [UInt8](repeating: X86.int3, count: 8)
  }

  /// ```
  /// +0  push rcx                    below the caller's rsp: free after a return
  /// +1  mov rcx, [rip + entry]
  /// +8  mov byte [rcx], 1           this thread is switched (one store)
  /// +11 pop rcx
  /// +12 jmp [rip + return]
  /// +32 the real return address, +40 the table entry's address
  /// ```
  /// Reached by `ret`: every register is as the function left it.
  func stub(at address: UInt64, entry: UInt64, returnTo: UInt64) -> [UInt8] {
    var code: [UInt8] = [0x51, 0x48, 0x8b, 0x0d] + X86.littleEndian(UInt32(Self.stubEntryOffset - 8))
    code += [0xc6, 0x01, 0x01, 0x59]
    code += [0xff, 0x25] + X86.littleEndian(UInt32(Self.stubReturnOffset - 18))
    code += [UInt8](repeating: X86.int3, count: 14)
    return code + X86.littleEndian(returnTo) + X86.littleEndian(entry)
  }
}
