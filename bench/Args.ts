/**
 * The benchmark scripts' one option form, `--name value`: `takeOption` removes it from `args`
 * (so that what is left are the positional arguments) and gives its value, or `fallback`.
 */
export const takeOption = (args: Array<string>, name: string, fallback: string): string => {
  const i = args.indexOf(`--${name}`)
  if (i < 0) return fallback
  const v = args[i + 1]
  if (v === undefined) throw new Error(`--${name} needs a value`)
  args.splice(i, 2)
  return v
}
