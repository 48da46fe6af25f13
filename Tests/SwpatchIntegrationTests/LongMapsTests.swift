import Foundation
import SwpatchProcess
import SwpatchSymbols
import Testing

/// A process with many threads (a stack mapping each) or many libraries has a
/// /proc/PID/maps far longer than one read returns: all of it must be read.
@Suite(.serialized, .needsRoot, .needsFixtures) struct LongMapsTests {
  @Test func mapsLongerThanOneReadAreReadToTheEnd() throws {
    let target = try Fixture("threads", ["1000", "200"])
    defer { target.stop() }
    #expect(target.output.wait(timeout: 10) { $0.hasPrefix("pid=") } != nil)
    let handle = try #require(FileHandle(forReadingAtPath: "/proc/\(target.pid)/maps"))
    let text = String(decoding: try handle.readToEnd() ?? Data(), as: UTF8.self)
    try handle.close()
    #expect(text.utf8.count > 8192, "maps is only \(text.utf8.count) bytes")
    let entries = try ProcessMaps.read(pid: target.pid)
    #expect(entries.count == text.split(separator: "\n").count)
    // libc is mapped after the executable, so a truncated read loses it and dlopen.
    let image = try ProcessImage(pid: target.pid)
    #expect(image.objects.contains { $0.name == "libc.so.6" })
    #expect(try image.resolve("dlopen").object == "libc.so.6")
  }
}
