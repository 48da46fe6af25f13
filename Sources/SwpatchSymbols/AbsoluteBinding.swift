/// One undefined entry of a library's `.dynsym`: a name the library needs from the
/// process it is loaded into.
public struct UndefinedSymbol: Sendable, Equatable {
  public let name: String
  /// The entry's index in `.dynsym`.
  public let index: Int
  /// `STB_WEAK`: the loader leaves it NULL when nothing defines it.
  public let isWeak: Bool
  /// The entry's `st_other` (visibility in its low two bits).
  public let other: UInt8
  /// Where the 24-byte `Elf64_Sym` lies in the file.
  public let entryOffset: UInt64

  public init(name: String, index: Int, isWeak: Bool, other: UInt8, entryOffset: UInt64) {
    self.name = name
    self.index = index
    self.isWeak = isWeak
    self.other = other
    self.entryOffset = entryOffset
  }
}

/// Bytes to write at an offset of a file.
public struct FileEdit: Sendable, Equatable {
  public let offset: UInt64
  public let bytes: [UInt8]
}

/// Binds undefined symbols of a library to absolute addresses of one process by
/// rewriting its `.dynsym` entries, before the loader sees the file.
///
/// Each entry becomes defined (`st_shndx = SHN_ABS`, `st_value` = the address) and
/// `STV_HIDDEN`, its binding and type kept. glibc's loader (measured on 2.36) then binds
/// every relocation against it to the library itself without a lookup (`RESOLVE_MAP`
/// treats a hidden symbol as local), and `SYMBOL_ADDRESS` takes an `SHN_ABS` value
/// without adding the load bias: `R_X86_64_GLOB_DAT`, `R_X86_64_64` and a lazy
/// `R_X86_64_JUMP_SLOT` (`_dl_fixup` skips the lookup for a non-default visibility) all
/// get exactly the address. So everything is bound by the time `dlopen` relocates the
/// library, before its constructors run. A hidden definition is never found by another
/// object's lookup, and the entry's `.gnu.version` index plays no part in either path.
public enum AbsoluteBinding {
  /// `SHN_ABS`
  static let absoluteSection: UInt16 = 0xfff1
  /// `STV_HIDDEN`
  static let hidden: UInt8 = 2

  /// The edits that bind each symbol to its address: `st_other`, `st_shndx` and
  /// `st_value` of its entry (11 bytes from offset 5 of the `Elf64_Sym`).
  public static func edits(binding: [(symbol: UndefinedSymbol, address: UInt64)]) -> [FileEdit] {
    binding.map { symbol, address in
      var bytes: [UInt8] = [(symbol.other & ~3) | hidden]
      bytes += withUnsafeBytes(of: absoluteSection.littleEndian, Array.init)
      bytes += withUnsafeBytes(of: address.littleEndian, Array.init)
      return FileEdit(offset: symbol.entryOffset + 5, bytes: bytes)
    }
  }

  /// `bytes` with `edits` applied: the file the loader will see.
  public static func applying(_ edits: [FileEdit], to bytes: [UInt8]) -> [UInt8] {
    var result = bytes
    for edit in edits {
      let start = Int(edit.offset)
      result.replaceSubrange(start..<start + edit.bytes.count, with: edit.bytes)
    }
    return result
  }
}
