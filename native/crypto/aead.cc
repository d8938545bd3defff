#include "crypto/aead.h"

#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/params.h>
#include <openssl/rand.h>

#include <algorithm>
#include <climits>
#include <memory>
#include <stdexcept>

namespace lowtide::crypto {
namespace {

using CipherCtx = std::unique_ptr<EVP_CIPHER_CTX, decltype(&EVP_CIPHER_CTX_free)>;

CipherCtx new_ctx() {
  CipherCtx ctx(EVP_CIPHER_CTX_new(), &EVP_CIPHER_CTX_free);
  if (!ctx) throw std::runtime_error("OpenSSL: no cipher context");
  return ctx;
}

// Algorithms fetched once per thread: an implicit fetch on every call takes
// OpenSSL's provider-store lock, which the pool threads then contend for.
const EVP_CIPHER* aes_256_gcm() {
  thread_local std::unique_ptr<EVP_CIPHER, decltype(&EVP_CIPHER_free)> cipher(EVP_CIPHER_fetch(nullptr, "AES-256-GCM", nullptr),
                                                                              &EVP_CIPHER_free);
  if (!cipher) throw std::runtime_error("OpenSSL: AES-256-GCM is unavailable");
  return cipher.get();
}

EVP_MAC* hmac() {
  thread_local std::unique_ptr<EVP_MAC, decltype(&EVP_MAC_free)> mac(EVP_MAC_fetch(nullptr, "HMAC", nullptr), &EVP_MAC_free);
  if (!mac) throw std::runtime_error("OpenSSL: HMAC is unavailable");
  return mac.get();
}

// EVP update calls take an int length: larger inputs go in pieces.
constexpr size_t kStep = size_t(1) << 30;

}  // namespace

size_t seal(const Key& key, Bytes aad, const Bytes* parts, size_t count, uint8_t* out) {
  if (RAND_bytes(out, int(kNonceSize)) != 1) throw std::runtime_error("OpenSSL: no random nonce");
  CipherCtx ctx = new_ctx();
  int n = 0;
  if (EVP_EncryptInit_ex(ctx.get(), aes_256_gcm(), nullptr, key.data(), out) != 1)
    throw std::runtime_error("OpenSSL: AES-256-GCM init failed");
  if (aad.size > 0 && (aad.size > INT_MAX || EVP_EncryptUpdate(ctx.get(), nullptr, &n, aad.data, int(aad.size)) != 1))
    throw std::runtime_error("OpenSSL: AES-256-GCM AAD failed");
  size_t pos = kNonceSize;
  for (size_t i = 0; i < count; i++) {
    for (size_t off = 0; off < parts[i].size; off += kStep) {
      size_t len = std::min(kStep, parts[i].size - off);
      if (EVP_EncryptUpdate(ctx.get(), out + pos, &n, parts[i].data + off, int(len)) != 1)
        throw std::runtime_error("OpenSSL: AES-256-GCM encryption failed");
      pos += size_t(n);
    }
  }
  if (EVP_EncryptFinal_ex(ctx.get(), out + pos, &n) != 1) throw std::runtime_error("OpenSSL: AES-256-GCM final failed");
  pos += size_t(n);
  if (EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_GCM_GET_TAG, int(kTagSize), out + pos) != 1)
    throw std::runtime_error("OpenSSL: AES-256-GCM tag failed");
  return pos + kTagSize;
}

bool open_in_place(const Key& key, Bytes aad, uint8_t* obj, size_t size, size_t* plain_size) {
  if (size < kSealOverhead) return false;
  size_t body = size - kSealOverhead;
  CipherCtx ctx = new_ctx();
  int n = 0;
  if (EVP_DecryptInit_ex(ctx.get(), aes_256_gcm(), nullptr, key.data(), obj) != 1)
    throw std::runtime_error("OpenSSL: AES-256-GCM init failed");
  if (aad.size > 0 && (aad.size > INT_MAX || EVP_DecryptUpdate(ctx.get(), nullptr, &n, aad.data, int(aad.size)) != 1))
    throw std::runtime_error("OpenSSL: AES-256-GCM AAD failed");
  uint8_t* p = obj + kNonceSize;
  size_t pos = 0;
  for (size_t off = 0; off < body; off += kStep) {
    size_t len = std::min(kStep, body - off);
    // In place: GCM's output may be its input exactly.
    if (EVP_DecryptUpdate(ctx.get(), p + pos, &n, p + off, int(len)) != 1) return false;
    pos += size_t(n);
  }
  uint8_t tag[kTagSize];
  std::copy(obj + size - kTagSize, obj + size, tag);
  if (EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_GCM_SET_TAG, int(kTagSize), tag) != 1)
    throw std::runtime_error("OpenSSL: AES-256-GCM tag failed");
  if (EVP_DecryptFinal_ex(ctx.get(), p + pos, &n) != 1) return false;
  *plain_size = pos + size_t(n);
  return true;
}

Mac hmac_sha256(const Key& key, const uint8_t* p, size_t len) {
  Mac mac{};
  size_t out = 0;
  // One context per thread, its digest set once: setting it fetches SHA-256
  // (the provider-store lock again); later inits only change the key.
  thread_local std::unique_ptr<EVP_MAC_CTX, decltype(&EVP_MAC_CTX_free)> ctx(nullptr, &EVP_MAC_CTX_free);
  const OSSL_PARAM* params = nullptr;
  char digest[] = "SHA256";
  OSSL_PARAM first[] = {OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, digest, 0), OSSL_PARAM_construct_end()};
  if (!ctx) {
    ctx.reset(EVP_MAC_CTX_new(hmac()));
    params = first;
  }
  if (!ctx || EVP_MAC_init(ctx.get(), key.data(), key.size(), params) != 1 || EVP_MAC_update(ctx.get(), p, len) != 1 ||
      EVP_MAC_final(ctx.get(), mac.data(), &out, mac.size()) != 1 || out != mac.size())
    throw std::runtime_error("OpenSSL: HMAC-SHA256 failed");
  return mac;
}

}  // namespace lowtide::crypto
