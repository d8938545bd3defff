#include "copy/hash.h"

#include <openssl/evp.h>

#include <memory>
#include <stdexcept>

namespace lowtide::copy {

Digest sha256(const unsigned char* p, size_t len) {
  std::unique_ptr<EVP_MD_CTX, decltype(&EVP_MD_CTX_free)> ctx(EVP_MD_CTX_new(), &EVP_MD_CTX_free);
  Digest d{};
  unsigned int n = 0;
  if (!ctx || EVP_DigestInit_ex(ctx.get(), EVP_sha256(), nullptr) != 1 || EVP_DigestUpdate(ctx.get(), p, len) != 1 ||
      EVP_DigestFinal_ex(ctx.get(), d.data(), &n) != 1 || n != d.size())
    throw std::runtime_error("OpenSSL SHA-256 failed");
  return d;
}

}  // namespace lowtide::copy
