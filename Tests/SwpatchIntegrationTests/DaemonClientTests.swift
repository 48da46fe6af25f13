import Foundation
import SwpatchDaemon
import Testing

/// The CLI's end of the socket, driven in-process against a workspace daemon.
@Suite(.serialized, .needsRoot, .needsFixtures) struct DaemonClientTests {
  @Test func aClientWhoseSendBreaksOffReadsTheDaemonsErrorLine() throws {
    let ws = Workspace()
    #expect(ws.swpatch("status").status == 0)
    let client = DaemonClient(socketPath: ws.socket, stateDirectory: ws.stateDir)
    // 4 MiB on one line: the daemon refuses it after 1 MiB and closes while we still send.
    let line = Data(repeating: 0x61, count: 4 << 20) + Data([0x0a])
    do {
      let answer = String(decoding: try client.exchange(line), as: UTF8.self)
      #expect(answer.contains("\"request_too_large\""), "\(answer)")
    } catch {
      Issue.record("no answer but: \(error.code): \(error.message)")
    }
    #expect(ws.swpatch("status").status == 0)
  }
}
