/**
 * The simulated device as a `Driver` layer.
 *
 * @since 0.1.0
 */
import { Effect, Layer } from "effect"
import type { DriverError } from "../domain/Errors.ts"
import { Driver, driverCall } from "../services/Driver.ts"
import { SimDriver, type SimDriverOptions } from "./SimDriver.ts"
import { TrackedPort } from "./TrackedPort.ts"


/**
 * A `Driver` over the given simulator instance. Keeping the instance outside the layer lets the
 * caller inspect its ledger after the session's scope has closed (leak checks).
 * @category layers
 */
export const layerSimWith = (sim: SimDriver): Layer.Layer<Driver> =>
  Layer.effect(
    Driver,
    Effect.gen(function*() {
      // Note [Handle ownership]: the registry's release gives back everything still alive.
      const port = yield* Effect.acquireRelease(
        Effect.sync(() => new TrackedPort(sim)),
        (p) => Effect.sync(() => p.releaseAll())
      )
      return Driver.of({
        info: { kind: "sim", ordinal: 0, name: sim.name, granularity: sim.granularity, capacity: sim.capacity },
        port,
        memGetInfo: Effect.sync(() => sim.memGetInfo()),
        synchronize: Effect.void,
        write: (address, data) => driverCall(() => sim.write(address, data)),
        read: (address, bytes) => driverCall(() => sim.read(address, bytes)),
        live: Effect.sync(() => port.live())
      })
    })
  )

/** A `Driver` over a fresh simulated device. @category layers */
export const layerSim = (options: SimDriverOptions = {}): Layer.Layer<Driver> =>
  Layer.suspend(() => layerSimWith(new SimDriver(options)))
