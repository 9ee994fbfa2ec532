/**
 * TLS material for the endpoint proxy. By default a private certificate
 * authority is generated at first start (`<data>/tls/ca.pem`, printed by
 * `cella ca` so `curl --cacert` works) and a wildcard certificate for
 * `*.<domain>` is issued from it; an operator may supply their own
 * certificate and key instead. Keys are ECDSA P-256 and never leave the host.
 */
import 'reflect-metadata';
import { webcrypto } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import * as x509 from '@peculiar/x509';
import { CellaError } from '../contract/index.js';

x509.cryptoProvider.set(webcrypto as unknown as Crypto);

const ALG = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' } as const;
const DAY = 86_400_000;

export interface TlsMaterial {
  cert: string;
  key: string;
  /** The CA that issued `cert`, when Cella made it. */
  caFile?: string;
}

export const tlsFiles = (dataDir: string) => {
  const dir = path.join(dataDir, 'tls');
  return { dir, ca: path.join(dir, 'ca.pem'), caKey: path.join(dir, 'ca.key'), cert: path.join(dir, 'server.pem'), key: path.join(dir, 'server.key') };
};

async function exportKey(key: CryptoKey): Promise<string> {
  const der = Buffer.from(await webcrypto.subtle.exportKey('pkcs8', key));
  return `-----BEGIN PRIVATE KEY-----\n${der
    .toString('base64')
    .replace(/(.{64})/g, '$1\n')
    .trimEnd()}\n-----END PRIVATE KEY-----\n`;
}

async function importKey(pem: string): Promise<CryptoKey> {
  const der = Buffer.from(pem.replace(/-----[^-]+-----/g, '').replace(/\s+/g, ''), 'base64');
  return await webcrypto.subtle.importKey('pkcs8', der, ALG, true, ['sign']);
}

const serial = (): string =>
  Buffer.from(webcrypto.getRandomValues(new Uint8Array(16)))
    .toString('hex')
    .replace(/^[89a-f]/, '1');

/**
 * The proxy's certificate: the operator's if given, else Cella's own, made
 * once per data directory and re-issued when the domain changes.
 */
export async function loadTls(dataDir: string, domain: string, own?: { certFile: string; keyFile: string }): Promise<TlsMaterial> {
  if (own) {
    try {
      return { cert: readFileSync(own.certFile, 'utf8'), key: readFileSync(own.keyFile, 'utf8') };
    } catch (err) {
      throw new CellaError('INVALID_ARGUMENT', `cannot read the TLS certificate or key: ${(err as Error).message}`);
    }
  }
  const f = tlsFiles(dataDir);
  mkdirSync(f.dir, { recursive: true, mode: 0o700 });
  let caCert: x509.X509Certificate;
  let caKey: CryptoKey;
  if (existsSync(f.ca) && existsSync(f.caKey)) {
    caCert = new x509.X509Certificate(readFileSync(f.ca, 'utf8'));
    caKey = await importKey(readFileSync(f.caKey, 'utf8'));
  } else {
    const keys = await webcrypto.subtle.generateKey(ALG, true, ['sign', 'verify']);
    caCert = await x509.X509CertificateGenerator.createSelfSigned({
      serialNumber: serial(),
      name: `CN=Cella local CA (${path.resolve(dataDir)})`,
      notBefore: new Date(Date.now() - DAY),
      notAfter: new Date(Date.now() + 3650 * DAY),
      keys,
      signingAlgorithm: ALG,
      extensions: [
        new x509.BasicConstraintsExtension(true, 0, true),
        new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
        await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
      ],
    });
    caKey = keys.privateKey;
    writeFileSync(f.caKey, await exportKey(caKey), { mode: 0o600 });
    writeFileSync(f.ca, caCert.toString('pem'), { mode: 0o644 });
  }
  const want = [domain, `*.${domain}`];
  if (existsSync(f.cert) && existsSync(f.key)) {
    const leaf = new x509.X509Certificate(readFileSync(f.cert, 'utf8'));
    const names =
      leaf
        .getExtension(x509.SubjectAlternativeNameExtension)
        ?.names.toJSON()
        .map((n) => n.value) ?? [];
    const fresh = leaf.notAfter.getTime() - Date.now() > 30 * DAY;
    if (fresh && want.every((n) => names.includes(n)) && (await leaf.verify({ publicKey: caCert.publicKey, signatureOnly: true }))) {
      return { cert: readFileSync(f.cert, 'utf8'), key: readFileSync(f.key, 'utf8'), caFile: f.ca };
    }
  }
  const keys = await webcrypto.subtle.generateKey(ALG, true, ['sign', 'verify']);
  const leaf = await x509.X509CertificateGenerator.create({
    serialNumber: serial(),
    subject: `CN=*.${domain}`,
    issuer: caCert.subject,
    notBefore: new Date(Date.now() - DAY),
    notAfter: new Date(Date.now() + 397 * DAY),
    signingKey: caKey,
    publicKey: keys.publicKey,
    signingAlgorithm: ALG,
    extensions: [
      new x509.BasicConstraintsExtension(false, undefined, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
      new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth]),
      new x509.SubjectAlternativeNameExtension(want.map((value) => ({ type: 'dns' as const, value }))),
      await x509.AuthorityKeyIdentifierExtension.create(caCert),
    ],
  });
  const cert = leaf.toString('pem') + '\n' + caCert.toString('pem');
  const key = await exportKey(keys.privateKey);
  writeFileSync(f.key, key, { mode: 0o600 });
  writeFileSync(f.cert, cert, { mode: 0o644 });
  return { cert, key, caFile: f.ca };
}
