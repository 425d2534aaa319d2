// A protobuf wire-format encoder and decoder of a few lines, and unary gRPC calls with raw bytes:
// the CSI tests build every request from the spec's field numbers here, never from the plugin's
// own .proto.
import * as grpc from '@grpc/grpc-js';

// --- a protobuf encoder of a few lines (proto3 wire format) ------------------------------------

export const varint = (n: number): Buffer => {
  const out: number[] = [];
  let v = n;
  while (v >= 0x80) {
    out.push((v & 0x7f) | 0x80);
    v = Math.floor(v / 128);
  }
  out.push(v);
  return Buffer.from(out);
};
export const tag = (field: number, wire: number) => varint(field * 8 + wire);
/** Wire type 2: strings, bytes, embedded messages, map entries. */
export const bytesField = (field: number, value: Buffer) => Buffer.concat([tag(field, 2), varint(value.length), value]);
export const str = (field: number, value: string) => bytesField(field, Buffer.from(value, 'utf8'));
export const msg = (field: number, ...parts: Buffer[]) => bytesField(field, Buffer.concat(parts));
/** Wire type 0. */
export const bool = (field: number, value: boolean) => Buffer.concat([tag(field, 0), varint(value ? 1 : 0)]);
export const enumField = (field: number, value: number) => Buffer.concat([tag(field, 0), varint(value)]);
/** A map<string, string> is a repeated entry message with key = 1, value = 2. */
export const map = (field: number, entries: Record<string, string>) => Buffer.concat(Object.entries(entries).map(([k, v]) => msg(field, str(1, k), str(2, v))));

/** Decodes one message level: field number → values (numbers for varints, Buffers for wire type 2). */
export function decode(buf: Buffer): Map<number, Array<number | Buffer>> {
  const fields = new Map<number, Array<number | Buffer>>();
  let i = 0;
  const readVarint = () => {
    let result = 0;
    let shift = 1;
    for (;;) {
      const b = buf[i++]!;
      result += (b & 0x7f) * shift;
      if (b < 0x80) return result;
      shift *= 128;
    }
  };
  while (i < buf.length) {
    const key = readVarint();
    const field = Math.floor(key / 8);
    const wire = key % 8;
    let value: number | Buffer;
    if (wire === 0) value = readVarint();
    else if (wire === 2) {
      const len = readVarint();
      value = buf.subarray(i, i + len);
      i += len;
    } else throw new Error(`unexpected wire type ${wire} for field ${field}`);
    fields.set(field, [...(fields.get(field) ?? []), value]);
  }
  return fields;
}
export const text = (m: Map<number, Array<number | Buffer>>, field: number): string[] => (m.get(field) ?? []).map((v) => (v as Buffer).toString('utf8'));

const CALL_DEADLINE_MS = 30_000;


export interface Reply {
  code: grpc.status;
  details: string;
  body: Map<number, Array<number | Buffer>>;
}
export function call(client: grpc.Client, method: string, request: Buffer = Buffer.alloc(0)): Promise<Reply> {
  return new Promise((resolve) => {
    client.makeUnaryRequest<Buffer, Buffer>(
      method,
      (b) => b,
      (b) => b,
      request,
      new grpc.Metadata(),
      { deadline: Date.now() + CALL_DEADLINE_MS },
      (err, reply) => {
        if (err) resolve({ code: err.code, details: err.details, body: new Map() });
        else resolve({ code: grpc.status.OK, details: '', body: decode(reply ?? Buffer.alloc(0)) });
      },
    );
  });
}

