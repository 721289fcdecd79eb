import koffi from "koffi"
import { ensureFakeCuda } from "../../test/fake-cuda/setup.ts"
const { full } = ensureFakeCuda()
const lib = koffi.load(full)
const cuInit = lib.func("int cuInit(unsigned int)")
const retain = lib.func("int cuDevicePrimaryCtxRetain(uint64_t *ctx, int dev)")
const setCur = lib.func("int cuCtxSetCurrent(uint64_t ctx)")
const gname = lib.func("int cuGetErrorName(int, _Out_ const char **)")
const create = lib.func("int cuMemCreate(uint64_t *h, size_t size, const void *prop, unsigned long long flags)")
const release = lib.func("int cuMemRelease(uint64_t h)")
console.log(cuInit(0))
const slot = new BigUint64Array(1); const u32 = new Uint32Array(slot.buffer)
console.log(retain(slot, 0), slot[0], u32[0], u32[1])
console.log(setCur(Number(slot[0])))
const o: [string | null] = [null]
console.log(gname(2, o), o)
console.log(gname(12345, o), o)
// try Uint32Array as uint64_t*
try { console.log("u32 as u64*", retain(new Uint32Array(2), 0)) } catch (e) { console.log("u32 err", (e as Error).message) }
try { console.log("f64 as u64*", retain(new Float64Array(1), 0)) } catch (e) { console.log("f64 err", (e as Error).message) }
const Loc = koffi.struct("CUmemLocation", { type: "int", id: "int" })
const Prop = koffi.struct("CUmemAllocationProp", { type: "int", requestedHandleTypes: "int", location: Loc, win32HandleMetaData: "void *",
  allocFlags: koffi.struct({ compressionType: "unsigned char", gpuDirectRDMACapable: "unsigned char", usage: "unsigned short", reserved: koffi.array("unsigned char", 4, "Array") }) })
console.log(koffi.sizeof(Prop), koffi.offsetof(Prop, "allocFlags"))
const pval = { type: 1, requestedHandleTypes: 0, location: { type: 1, id: 0 }, win32HandleMetaData: null, allocFlags: { compressionType: 0, gpuDirectRDMACapable: 0, usage: 0, reserved: [0,0,0,0] } }
const ptr = koffi.alloc(Prop, 1); koffi.encode(ptr, Prop, pval)
const buf = Buffer.alloc(32); koffi.encode(buf, Prop, pval)
console.log("buf", buf)
const G = 2 * 1024 * 1024
console.log(create(slot, G, ptr, 0), u32[0], u32[1], release(Number(slot[0])))
console.log(create(slot, G, buf, 0), u32[0], u32[1], release(slot[0]))
const bench = (name: string, prop: unknown) => {
  const N = 200000
  for (let r = 0; r < 3; r++) {
    const t = process.hrtime.bigint()
    for (let i = 0; i < N; i++) { create(slot, G, prop, 0); release(u32[1]! * 4294967296 + u32[0]!) }
    console.log(name, Number(process.hrtime.bigint() - t) / N, "ns create+release")
  }
}
bench("alloc", ptr); bench("buffer", buf)
const u8 = new Uint8Array(32); u8.set(buf); bench("u8", u8)
