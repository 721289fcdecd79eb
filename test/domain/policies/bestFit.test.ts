/**
 * The best-fit index against a shadow model: a plain array of (size, tie, id) kept sorted the way
 * `insert` orders equal keys (first among equals), on random streams of insert, remove and
 * replace (Note [Replace in place]), and of the keyed methods (Note [Keyed entries]); every
 * operation's result and the whole order are compared.
 */
import { describe, expect, it } from "@effect/vitest"
import * as fc from "fast-check"
import { BestFit } from "../../../src/domain/policies/pytorch/BestFit.ts"

type Entry = { size: number; tie: number; id: number }

const less = (a: Entry, size: number, tie: number) => a.size < size || (a.size === size && a.tie < tie)

class Shadow {
  readonly xs: Array<Entry> = []
  insert(id: number, size: number, tie: number) {
    let i = 0
    while (i < this.xs.length && less(this.xs[i]!, size, tie)) i++
    this.xs.splice(i, 0, { size, tie, id })
  }
  remove(id: number, size: number, tie: number): boolean {
    const i = this.xs.findIndex((e) => e.id === id && e.size === size && e.tie === tie)
    if (i < 0) return false
    this.xs.splice(i, 1)
    return true
  }
  replace(id: number, size: number, tie: number, newId: number, newSize: number, newTie: number): boolean {
    if (!this.remove(id, size, tie)) return false
    this.insert(newId, newSize, newTie)
    return true
  }
}

// Small sizes and ties, so that equal keys and equal sizes are common; ids unique per entry.
const op = fc.oneof(
  fc.record({ k: fc.constant("insert" as const), size: fc.integer({ min: 0, max: 40 }), tie: fc.integer({ min: 0, max: 6 }) }),
  fc.record({ k: fc.constant("remove" as const), pick: fc.nat(), stale: fc.boolean() }),
  fc.record({
    k: fc.constant("replace" as const),
    pick: fc.nat(),
    stale: fc.boolean(),
    size: fc.integer({ min: 0, max: 40 }),
    tie: fc.integer({ min: 0, max: 6 }),
    sameId: fc.boolean()
  })
)

describe("BestFit", () => {
  it("insert, remove and replace keep the order of the shadow model", () => {
    fc.assert(
      fc.property(fc.array(op, { maxLength: 300 }), fc.integer({ min: 1, max: 8 }), (ops, capacity) => {
        const bf = new BestFit(capacity)
        const sh = new Shadow()
        let next = 1
        for (const o of ops) {
          if (o.k === "insert") {
            const id = next++
            bf.insert(id, o.size, o.tie)
            sh.insert(id, o.size, o.tie)
          } else {
            // an entry that is there, or (stale) a key that is not
            const e = sh.xs.length > 0 ? sh.xs[o.pick % sh.xs.length]! : { size: 1, tie: 1, id: 0 }
            const key = o.stale ? { ...e, id: e.id + 100000 } : e
            if (o.k === "remove") {
              expect(bf.remove(key.id, key.size, key.tie)).toBe(sh.remove(key.id, key.size, key.tie))
            } else {
              const newId = o.sameId ? key.id : next++
              expect(bf.replace(key.id, key.size, key.tie, newId, o.size, o.tie))
                .toBe(sh.replace(key.id, key.size, key.tie, newId, o.size, o.tie))
            }
          }
          expect(bf.length).toBe(sh.xs.length)
        }
        const got: Array<Entry> = []
        for (let i = 0; i < bf.length; i++) got.push({ size: bf.sizeAt(i), tie: bf.tieAt(i), id: bf.idAt(i) })
        expect(got).toEqual(sh.xs)
        // best fit agrees too
        for (let s = 0; s <= 41; s += 3) {
          const want = sh.xs.find((e) => e.size >= s)
          expect(bf.bestFit(s)).toBe(want === undefined ? -1 : want.id)
        }
      }),
      { numRuns: 400 }
    )
  })

  it("the keyed methods read keys from the owner's arrays and agree with the shadow model", () => {
    const keyed = fc.oneof(
      fc.record({ k: fc.constant("insert" as const), size: fc.integer({ min: 0, max: 40 }), tie: fc.integer({ min: 0, max: 6 }) }),
      fc.record({ k: fc.constant("remove" as const), pick: fc.nat() }),
      fc.record({ k: fc.constant("removeAt" as const), pick: fc.nat() }),
      fc.record({
        k: fc.constant("move" as const),
        pick: fc.nat(),
        size: fc.integer({ min: 0, max: 40 }),
        tie: fc.integer({ min: 0, max: 6 }),
        sameId: fc.boolean()
      })
    )
    fc.assert(
      fc.property(fc.array(keyed, { maxLength: 300 }), (ops) => {
        // the owner's key arrays, as the stitching allocator's block table
        const size: Array<number> = [0]
        const tie: Array<number> = [0]
        const bf = new BestFit(2, { size, tie })
        const sh = new Shadow()
        const fresh = (s: number, t: number) => {
          size.push(s)
          tie.push(t)
          return size.length - 1
        }
        for (const o of ops) {
          if (o.k === "insert") {
            const id = fresh(o.size, o.tie)
            bf.insertKeyed(id)
            sh.insert(id, o.size, o.tie)
            continue
          }
          if (sh.xs.length === 0) {
            expect(bf.removeKeyed(0)).toBe(false)
            expect(bf.indexOfKeyed(0)).toBe(-1)
            continue
          }
          const e = sh.xs[o.pick % sh.xs.length]!
          if (o.k === "remove") {
            expect(bf.removeKeyed(e.id)).toBe(true)
            sh.remove(e.id, e.size, e.tie)
          } else if (o.k === "removeAt") {
            const at = bf.indexOfKeyed(e.id)
            expect(at).toBeGreaterThanOrEqual(0)
            bf.removeKeyedAt(at)
            sh.remove(e.id, e.size, e.tie)
          } else {
            // found first, then the keys change (the same id) or another id takes the place
            const at = bf.indexOfKeyed(e.id)
            let id = e.id
            if (o.sameId) {
              size[id] = o.size
              tie[id] = o.tie
            } else id = fresh(o.size, o.tie)
            bf.moveKeyed(at, id)
            sh.replace(e.id, e.size, e.tie, id, o.size, o.tie)
          }
        }
        const got: Array<Entry> = []
        for (let i = 0; i < bf.length; i++) got.push({ size: bf.sizeAt(i), tie: bf.tieAt(i), id: bf.idAt(i) })
        expect(got).toEqual(sh.xs)
      }),
      { numRuns: 400 }
    )
  })

  it("replace moves an entry across more than the short-loop distance both ways", () => {
    const bf = new BestFit(4)
    for (let i = 0; i < 100; i++) bf.insert(i + 1, i * 10, 0)
    expect(bf.replace(5, 40, 0, 5, 995, 0)).toBe(true)
    expect(bf.replace(90, 890, 0, 90, 1, 0)).toBe(true)
    const sizes: Array<number> = []
    for (let i = 0; i < bf.length; i++) sizes.push(bf.sizeAt(i))
    expect(sizes).toEqual([...sizes].sort((a, b) => a - b))
    expect(bf.idAt(0)).toBe(1)
    expect(bf.idAt(1)).toBe(90)
    expect(bf.idAt(bf.length - 1)).toBe(5)
  })
})
