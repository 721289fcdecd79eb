/**
 * A small pickle writer (protocol 2: dicts, lists, strings, integers, floats, None, booleans),
 * to make snapshot-shaped inputs in tests without Python.
 */
type Py = null | boolean | number | string | ReadonlyArray<Py> | { readonly [k: string]: Py }

export const pickle = (value: Py, protocol = 2): Uint8Array => {
  const out: Array<number> = [0x80, protocol]
  const u32 = (n: number) => out.push(n & 0xff, (n >>> 8) & 0xff, (n >>> 16) & 0xff, (n >>> 24) & 0xff)
  const write = (v: Py): void => {
    if (v === null) out.push(0x4e) // NONE
    else if (v === true) out.push(0x88)
    else if (v === false) out.push(0x89)
    else if (typeof v === "number") {
      if (Number.isInteger(v) && v >= -(2 ** 31) && v < 2 ** 31) {
        out.push(0x4a) // BININT (signed, as Python writes a small negative int)
        u32(v)
      } else if (Number.isInteger(v)) {
        // LONG1: little-endian two's complement
        const bytes: Array<number> = []
        let x = BigInt(v)
        for (let i = 0; i < 9; i++) {
          bytes.push(Number(x & 0xffn))
          x >>= 8n
        }
        out.push(0x8a, bytes.length, ...bytes)
      } else {
        out.push(0x47) // BINFLOAT, big-endian
        const b = new DataView(new ArrayBuffer(8))
        b.setFloat64(0, v)
        for (let i = 0; i < 8; i++) out.push(b.getUint8(i))
      }
    } else if (typeof v === "string") {
      const b = new TextEncoder().encode(v)
      out.push(0x58) // BINUNICODE
      u32(b.length)
      out.push(...b)
    } else if (Array.isArray(v)) {
      out.push(0x5d, 0x28) // EMPTY_LIST, MARK
      for (const x of v) write(x)
      out.push(0x65) // APPENDS
    } else {
      out.push(0x7d, 0x28) // EMPTY_DICT, MARK
      for (const [k, x] of Object.entries(v)) {
        write(k)
        write(x as Py)
      }
      out.push(0x75) // SETITEMS
    }
  }
  write(value)
  out.push(0x2e) // STOP
  return Uint8Array.from(out)
}
