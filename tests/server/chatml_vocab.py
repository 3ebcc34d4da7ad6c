#!/usr/bin/env python3
"""chatml_vocab.py OUT.gguf [BASE.gguf] - writes a vocabulary-only GGUF (no
tensors) whose tokenizer has the ChatML control tokens <|im_start|> and
<|im_end|> and a ChatML tokenizer.chat_template, for `kiln synth
--vocab-from OUT.gguf`.

With BASE (a vocabulary GGUF such as ggml-vocab-gpt-2.gguf), its metadata is
copied and the two tokens are appended as control tokens (type 3): a
Qwen2-like byte-level BPE tokenizer. Without it, a small SentencePiece
("llama") vocabulary is generated: <unk>, <s>, </s>, the two ChatML tokens,
the 256 <0xNN> byte tokens and a few pieces. Standard library only.
"""
import struct
import sys

T_U8, T_I8, T_U16, T_I16, T_U32, T_I32, T_F32, T_BOOL, T_STR, T_ARR, T_U64, T_I64, T_F64 = range(13)
FIXED = {T_U8: "<B", T_I8: "<b", T_U16: "<H", T_I16: "<h", T_U32: "<I", T_I32: "<i",
         T_F32: "<f", T_BOOL: "<?", T_U64: "<Q", T_I64: "<q", T_F64: "<d"}
CHATML = ("{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + "
          "message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt "
          "%}{{ '<|im_start|>assistant\\n' }}{% endif %}")


class Reader:
    def __init__(self, data):
        self.d, self.o = data, 0

    def take(self, fmt):
        v = struct.unpack_from(fmt, self.d, self.o)[0]
        self.o += struct.calcsize(fmt)
        return v

    def string(self):
        n = self.take("<Q")
        s = self.d[self.o:self.o + n]
        self.o += n
        return s

    def value(self, t):
        if t in FIXED:
            return self.take(FIXED[t])
        if t == T_STR:
            return self.string()
        if t == T_ARR:
            et, n = self.take("<I"), self.take("<Q")
            return (et, [self.value(et) for _ in range(n)])
        raise ValueError("unknown GGUF type %d" % t)


def put_value(out, t, v):
    if t in FIXED:
        out += struct.pack(FIXED[t], v)
    elif t == T_STR:
        out += struct.pack("<Q", len(v)) + v
    elif t == T_ARR:
        et, items = v
        out += struct.pack("<IQ", et, len(items))
        for x in items:
            put_value(out, et, x)


def read_kvs(path):
    r = Reader(open(path, "rb").read())
    assert r.take("<I") == 0x46554747, "not a GGUF file"
    r.take("<I")
    n_tensors, n_kv = r.take("<Q"), r.take("<Q")
    assert n_tensors == 0, "BASE must be a vocabulary-only GGUF"
    kvs = {}
    for _ in range(n_kv):
        key = r.string().decode()
        t = r.take("<I")
        kvs[key] = (t, r.value(t))
    return kvs


def generated():
    toks = [b"<unk>", b"<s>", b"</s>", b"<|im_start|>", b"<|im_end|>"]
    types = [2, 3, 3, 3, 3]
    toks += [b"<0x%02X>" % b for b in range(256)]
    types += [6] * 256
    pieces = ["\u2581", "\u2581the", "\u2581a", "er", "in", "on", "user", "system", "assistant"]
    pieces += [chr(c) for c in range(ord("a"), ord("z") + 1)]
    toks += [p.encode() for p in pieces]
    types += [1] * len(pieces)
    scores = [0.0] * 261 + [-float(i) for i in range(len(pieces))]
    return {
        "general.architecture": (T_STR, b"llama"),
        "tokenizer.ggml.model": (T_STR, b"llama"),
        "tokenizer.ggml.tokens": (T_ARR, (T_STR, toks)),
        "tokenizer.ggml.scores": (T_ARR, (T_F32, scores)),
        "tokenizer.ggml.token_type": (T_ARR, (T_I32, types)),
        "tokenizer.ggml.unknown_token_id": (T_U32, 0),
        "tokenizer.ggml.bos_token_id": (T_U32, 1),
        "tokenizer.ggml.eos_token_id": (T_U32, 4),
        "tokenizer.ggml.add_bos_token": (T_BOOL, True),
    }


def augmented(base):
    kvs = read_kvs(base)
    _, (st, toks) = kvs["tokenizer.ggml.tokens"]
    n = len(toks)
    kvs["tokenizer.ggml.tokens"] = (T_ARR, (st, toks + [b"<|im_start|>", b"<|im_end|>"]))
    if "tokenizer.ggml.token_type" in kvs:
        t, (et, types) = kvs["tokenizer.ggml.token_type"]
        kvs["tokenizer.ggml.token_type"] = (t, (et, types + [3, 3]))
    else:
        kvs["tokenizer.ggml.token_type"] = (T_ARR, (T_I32, [1] * n + [3, 3]))
    if "tokenizer.ggml.scores" in kvs:
        t, (et, scores) = kvs["tokenizer.ggml.scores"]
        kvs["tokenizer.ggml.scores"] = (t, (et, scores + [0.0, 0.0]))
    kvs["tokenizer.ggml.eos_token_id"] = (T_U32, n + 1)
    return kvs


def main():
    if len(sys.argv) not in (2, 3):
        sys.exit(__doc__)
    kvs = augmented(sys.argv[2]) if len(sys.argv) == 3 else generated()
    kvs["tokenizer.chat_template"] = (T_STR, CHATML.encode())
    out = bytearray(struct.pack("<IIQQ", 0x46554747, 3, 0, len(kvs)))
    for key, (t, v) in kvs.items():
        put_value(out, T_STR, key.encode())
        out += struct.pack("<I", t)
        put_value(out, t, v)
    out += b"\0" * (-len(out) % 32)  # the (empty) data section starts aligned
    open(sys.argv[1], "wb").write(out)


if __name__ == "__main__":
    main()
