import Testing

@testable import SwpatchX86

/// The transition page's code: every RIP-relative operand of a gate and a stub must
/// reach the cell it is meant to, with the value it is meant to hold, and the gate's
/// branches must land on its two exits.
@Suite struct TransitionPageTests {
  let page = TransitionPage(
    base: 0x7f00_0000_0000, table: 0x7f00_0010_0000, threads: [0x7f11_0000_06c0, 0x7f22_0000_06c0],
    routes: [
      .init(old: 0x5555_0000_1000, new: 0x7f33_0000_2000),
      .init(old: 0x7f44_0000_0100, new: 0x5555_0000_2000),
    ],
    returns: [0x5555_0000_3003, 0x5555_0000_4004])!

  func word(_ bytes: [UInt8], at i: Int) -> UInt64 {
    (0..<8).reduce(0) { $0 | UInt64(bytes[i + $1]) << (8 * $1) }
  }
  func rel32(_ bytes: [UInt8], at i: Int) -> Int {
    Int(Int32(bitPattern: (0..<4).reduce(UInt32(0)) { $0 | UInt32(bytes[i + $1]) << (8 * $1) }))
  }
  func offset(_ address: UInt64) -> Int { Int(address - page.base) }

  @Test func gatesReadTheirThreadPointerAndReachTheirCells() {
    let bytes = page.bytes
    #expect(Array(bytes[0..<4]) == TransitionPage.magic)
    for (i, route) in page.routes.enumerated() {
      let g = offset(page.gateAddress(i))
      #expect(Array(bytes[g..<g + 4]) == X86.endbr64)
      #expect(Array(bytes[g + 6..<g + 15]) == [0x64, 0x48, 0x8b, 0x04, 0x25, 0, 0, 0, 0])  // mov rax, fs:[0]
      // mov rcx, [rip + d] at +15 (7 bytes): the table's address.
      #expect(word(bytes, at: g + 22 + rel32(bytes, at: g + 18)) == page.table)
      // je at +26 and +31 land on the two exits.
      #expect(26 + 2 + Int(Int8(bitPattern: bytes[g + 27])) == 42)
      #expect(31 + 2 + Int(Int8(bitPattern: bytes[g + 32])) == 50)
      #expect(37 + 2 + Int(Int8(bitPattern: bytes[g + 38])) == 22)
      // Exits: pop rcx; pop rax; jmp [rip + d] to new (+42) and old (+50).
      #expect(Array(bytes[g + 42..<g + 46]) == [0x59, 0x58, 0xff, 0x25])
      #expect(word(bytes, at: g + 50 + rel32(bytes, at: g + 46)) == route.new)
      #expect(word(bytes, at: g + 58 + rel32(bytes, at: g + 54)) == route.old)
    }
  }

  @Test func stubsSwitchTheirOwnEntryAndReturnToTheRealCaller() {
    let bytes = page.bytes
    for (i, returnAddress) in page.returns.enumerated() {
      let s = offset(page.stubAddress(i))
      #expect(bytes[s] == 0x51 && bytes[s + 11] == 0x59)  // push rcx ... pop rcx
      #expect(word(bytes, at: s + 8 + rel32(bytes, at: s + 4)) == page.tableEntry(i))
      #expect(Array(bytes[s + 8..<s + 11]) == [0xc6, 0x01, 0x01])  // mov byte [rcx], 1
      #expect(word(bytes, at: s + 18 + rel32(bytes, at: s + 14)) == returnAddress)
      #expect(page.returnCell(i) == page.stubAddress(i) + 32)
    }
    #expect(page.codeRange.upperBound <= page.base + TransitionPage.size)
  }

  @Test func theTableListsEachThreadThenZeroAndAnOddEntryIsSwitched() {
    #expect(page.tableBytes.count == 24)
    #expect(word(page.tableBytes, at: 8) == 0x7f22_0000_06c0)
    #expect(word(page.tableBytes, at: 16) == 0)
    #expect(!TransitionPage.isSwitched([0xc0, 0x06]))
    #expect(TransitionPage.isSwitched([0x01, 0x06]))
    #expect(!TransitionPage.isSwitched([]))
  }

  @Test func tooManyGatesForOnePageIsRefused() {
    let routes = [TransitionPage.Route](repeating: .init(old: 1, new: 2), count: 60)
    #expect(TransitionPage(base: 0x1000, table: 0x9000, threads: [0x10], routes: routes, returns: [1]) == nil)
  }
}
