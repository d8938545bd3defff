// Repository encryption primitives (docs/repository-format.md, "Encryption"),
// through the OpenSSL that Node itself links: AES-256-GCM objects laid out as
// nonce (12 bytes) | ciphertext | tag (16 bytes), with a random nonce per
// object and the object's name as additional authenticated data, and the
// keyed chunk id, HMAC-SHA256. Pure functions over bytes; no state besides
// OpenSSL's random generator.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>

namespace lowtide::crypto {

constexpr size_t kKeySize = 32;
constexpr size_t kNonceSize = 12;
constexpr size_t kTagSize = 16;
constexpr size_t kSealOverhead = kNonceSize + kTagSize;

using Key = std::array<uint8_t, kKeySize>;
using Mac = std::array<uint8_t, 32>;

struct Bytes {
  const uint8_t* data;
  size_t size;
};

// Encrypts the concatenation of `parts` (count of them) into `out`, which has
// room for their total size plus kSealOverhead bytes: a fresh random nonce,
// the ciphertext, the tag. Returns the bytes written. Throws
// std::runtime_error when OpenSSL fails.
size_t seal(const Key& key, Bytes aad, const Bytes* parts, size_t count, uint8_t* out);

// Authenticates and decrypts a sealed object of `size` bytes in place: the
// plaintext is written at obj + kNonceSize. Returns false (and leaves no
// usable plaintext) when the object is too short, was altered, or was sealed
// with another key or another `aad`. Throws std::runtime_error when OpenSSL
// fails for another reason.
bool open_in_place(const Key& key, Bytes aad, uint8_t* obj, size_t size, size_t* plain_size);

// HMAC-SHA256 of `len` bytes with a 32-byte key.
Mac hmac_sha256(const Key& key, const uint8_t* p, size_t len);

}  // namespace lowtide::crypto
