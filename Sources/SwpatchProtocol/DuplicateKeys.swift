/// Finds a key that appears twice in one JSON object. Foundation's decoders silently
/// keep one of the two values, so `{"library":"a.so","library":"b.so"}` would pass with
/// whichever they pick; patch files and protocol requests refuse it instead.
///
/// A small tokenizer over the text: it tracks, per open object, the keys seen so far
/// (unescaped, so `"\u0069d"` is `id`) and skips everything inside strings (braces in a
/// value are not structure). It does not validate: run it on text a JSON parser has
/// accepted; on anything else it returns nil or a harmless answer, never traps.
public enum DuplicateKeys {
  /// The path of the first repeated key (`functions[1].old`), or nil when every object's
  /// keys are distinct.
  public static func first(in bytes: some Collection<UInt8>) -> String? {
    var scanner = Scanner(bytes: Array(bytes))
    return scanner.run()
  }

  private enum Frame {
    case object(keys: Set<String>, current: String?, expectingKey: Bool)
    case array(index: Int)
  }

  private struct Scanner {
    let bytes: [UInt8]
    var i = 0
    var stack: [Frame] = []

    mutating func run() -> String? {
      while i < bytes.count {
        let byte = bytes[i]
        switch byte {
        case UInt8(ascii: "{"):
          stack.append(.object(keys: [], current: nil, expectingKey: true))
          i += 1
        case UInt8(ascii: "["):
          stack.append(.array(index: 0))
          i += 1
        case UInt8(ascii: "}"), UInt8(ascii: "]"):
          _ = stack.popLast()
          i += 1
        case UInt8(ascii: ","):
          switch stack.last {
          case .object(let keys, let current, _):
            stack[stack.count - 1] = .object(keys: keys, current: current, expectingKey: true)
          case .array(let index): stack[stack.count - 1] = .array(index: index + 1)
          case nil: break
          }
          i += 1
        case UInt8(ascii: "\""):
          let text = string()
          if case .object(var keys, _, true) = stack.last {
            if keys.contains(text) { return path(adding: text) }
            keys.insert(text)
            stack[stack.count - 1] = .object(keys: keys, current: text, expectingKey: false)
          }
        default:
          // ':' , whitespace, numbers, true, false, null: nothing to track.
          i += 1
        }
      }
      return nil
    }

    /// Reads a string starting at the opening quote and returns it unescaped.
    mutating func string() -> String {
      i += 1
      var utf8: [UInt8] = []
      var pendingHigh: UInt16?
      func flushHigh(_ utf8: inout [UInt8]) {
        if pendingHigh != nil { utf8 += Array("\u{FFFD}".utf8) }
        pendingHigh = nil
      }
      while i < bytes.count, bytes[i] != UInt8(ascii: "\"") {
        guard bytes[i] == UInt8(ascii: "\\"), i + 1 < bytes.count else {
          flushHigh(&utf8)
          utf8.append(bytes[i])
          i += 1
          continue
        }
        let escape = bytes[i + 1]
        i += 2
        guard escape == UInt8(ascii: "u") else {
          flushHigh(&utf8)
          let simple: [UInt8: UInt8] = [
            UInt8(ascii: "b"): 0x08, UInt8(ascii: "f"): 0x0c, UInt8(ascii: "n"): 0x0a,
            UInt8(ascii: "r"): 0x0d, UInt8(ascii: "t"): 0x09,
          ]
          utf8.append(simple[escape] ?? escape)  // \" \\ \/ stand for themselves
          continue
        }
        guard i + 4 <= bytes.count,
          let unit = UInt16(String(decoding: bytes[i..<i + 4], as: UTF8.self), radix: 16)
        else { continue }
        i += 4
        if let high = pendingHigh, (0xDC00...0xDFFF).contains(unit) {
          let scalar = 0x10000 + ((UInt32(high) - 0xD800) << 10) + (UInt32(unit) - 0xDC00)
          utf8 += Array(String(Unicode.Scalar(scalar)!).utf8)
          pendingHigh = nil
        } else if (0xD800...0xDBFF).contains(unit) {
          flushHigh(&utf8)
          pendingHigh = unit
        } else {
          flushHigh(&utf8)
          utf8 += Array(String(Unicode.Scalar(UInt32(unit)).map(Character.init) ?? "\u{FFFD}").utf8)
        }
      }
      flushHigh(&utf8)
      i += 1  // the closing quote
      return String(decoding: utf8, as: UTF8.self)
    }

    /// Where `key` sits: the keys and indices of the enclosing containers, then `key`.
    func path(adding key: String) -> String {
      var text = ""
      for frame in stack.dropLast() {
        switch frame {
        case .object(_, let current, _): text += (text.isEmpty ? "" : ".") + (current ?? "?")
        case .array(let index): text += "[\(index)]"
        }
      }
      return text + (text.isEmpty ? "" : ".") + key
    }
  }
}
