import SwpatchBase

/// Formats an address the way every swpatch output shows it: lowercase hex with a 0x prefix.
public func hexAddress(_ value: UInt64) -> String {
  "0x" + String(value, radix: 16)
}

/// Parses "0x…" (or bare hex) back into an address; nil when it is not hex.
public func parseHexAddress(_ text: String) -> UInt64? {
  let digits = text.hasPrefix("0x") || text.hasPrefix("0X") ? text.dropFirst(2) : Substring(text)
  return digits.isEmpty ? nil : UInt64(digits, radix: 16)
}

/// Bytes as lowercase hex with no separators (`f30f1efa`), as the registry stores them.
public func hexBytes(_ bytes: [UInt8]) -> String {
  bytes.map { ($0 < 16 ? "0" : "") + String($0, radix: 16) }.joined()
}

/// Parses `hexBytes`' form back into bytes; nil when it is not an even run of hex digits.
public func parseHexBytes(_ text: String) -> [UInt8]? {
  let chars = Array(text.utf8)
  guard chars.count % 2 == 0 else { return nil }
  var out: [UInt8] = []
  out.reserveCapacity(chars.count / 2)
  var i = 0
  while i < chars.count {
    guard let pair = UInt8(String(decoding: chars[i..<i + 2], as: UTF8.self), radix: 16) else { return nil }
    out.append(pair)
    i += 2
  }
  return out
}

// Addresses are encoded as hex strings so JSON readers never see them rounded through a double
// and humans can compare them with /proc/PID/maps.
extension KeyedEncodingContainer {
  public mutating func encodeHex(_ value: UInt64, forKey key: Key) throws {
    try encode(hexAddress(value), forKey: key)
  }

  public mutating func encodeHexBytes(_ value: [UInt8], forKey key: Key) throws {
    try encode(hexBytes(value), forKey: key)
  }
}

extension KeyedDecodingContainer {
  public func decodeHex(forKey key: Key) throws -> UInt64 {
    let text = try decode(String.self, forKey: key)
    guard let value = parseHexAddress(text) else {
      throw DecodingError.dataCorruptedError(
        forKey: key, in: self, debugDescription: "expected a hex address like 0x1234, got '\(text)'")
    }
    return value
  }

  public func decodeHexBytes(forKey key: Key) throws -> [UInt8] {
    let text = try decode(String.self, forKey: key)
    guard let value = parseHexBytes(text) else {
      throw DecodingError.dataCorruptedError(
        forKey: key, in: self, debugDescription: "expected hex bytes like f30f1efa, got '\(text)'")
    }
    return value
  }
}

/// An address in a target, written as every swpatch output shows it (`0x55d0c0ffee00`):
/// in JSON as that string, so no reader rounds it through a double, and in text.
public struct Address: Hashable, Comparable, Sendable, Codable, CustomStringConvertible {
  public var value: UInt64

  public init(_ value: UInt64) {
    self.value = value
  }

  public var description: String { hexAddress(value) }

  public static func < (lhs: Address, rhs: Address) -> Bool { lhs.value < rhs.value }

  public init(from decoder: any Decoder) throws {
    let text = try decoder.singleValueContainer().decode(String.self)
    guard let value = parseHexAddress(text) else {
      throw DecodingError.dataCorrupted(
        .init(
          codingPath: decoder.codingPath,
          debugDescription: "expected a hex address like 0x1234, got '\(text)'"))
    }
    self.value = value
  }

  public func encode(to encoder: any Encoder) throws {
    var container = encoder.singleValueContainer()
    try container.encode(description)
  }
}

/// A stored address that travels as hex (`"0x55d0c0ffee00"`) in JSON: the registry and
/// status keep `UInt64`s for arithmetic, and their `Codable` is synthesized around this.
@propertyWrapper
public struct Hex: Hashable, Sendable, Codable {
  public var wrappedValue: UInt64

  public init(wrappedValue: UInt64) {
    self.wrappedValue = wrappedValue
  }

  public init(from decoder: any Decoder) throws {
    wrappedValue = try Address(from: decoder).value
  }

  public func encode(to encoder: any Encoder) throws {
    try Address(wrappedValue).encode(to: encoder)
  }
}

/// Stored bytes that travel as lowercase hex with no separators (`"f30f1efa"`).
@propertyWrapper
public struct HexBytes: Hashable, Sendable, Codable {
  public var wrappedValue: [UInt8]

  public init(wrappedValue: [UInt8]) {
    self.wrappedValue = wrappedValue
  }

  public init(from decoder: any Decoder) throws {
    let text = try decoder.singleValueContainer().decode(String.self)
    guard let bytes = parseHexBytes(text) else {
      throw DecodingError.dataCorrupted(
        .init(
          codingPath: decoder.codingPath, debugDescription: "expected hex bytes like f30f1efa, got '\(text)'")
      )
    }
    wrappedValue = bytes
  }

  public func encode(to encoder: any Encoder) throws {
    var container = encoder.singleValueContainer()
    try container.encode(hexBytes(wrappedValue))
  }
}

/// An optional stored address that travels as hex, and is left out of the JSON when
/// nil (so a registry written before the field existed still reads).
@propertyWrapper
public struct OptionalHex: Hashable, Sendable, Codable {
  public var wrappedValue: UInt64?

  public init(wrappedValue: UInt64?) {
    self.wrappedValue = wrappedValue
  }

  public init(from decoder: any Decoder) throws {
    let container = try decoder.singleValueContainer()
    wrappedValue = container.decodeNil() ? nil : try Address(from: decoder).value
  }

  public func encode(to encoder: any Encoder) throws {
    var container = encoder.singleValueContainer()
    if let wrappedValue { try container.encode(Address(wrappedValue)) } else { try container.encodeNil() }
  }
}

// Synthesized Codable calls these for an `@OptionalHex` property: a missing key is nil,
// and nil is not written at all.
extension KeyedDecodingContainer {
  public func decode(_ type: OptionalHex.Type, forKey key: Key) throws -> OptionalHex {
    try decodeIfPresent(type, forKey: key) ?? OptionalHex(wrappedValue: nil)
  }
}

extension KeyedEncodingContainer {
  public mutating func encode(_ value: OptionalHex, forKey key: Key) throws {
    if value.wrappedValue != nil { try encodeIfPresent(value, forKey: key) }
  }
}
