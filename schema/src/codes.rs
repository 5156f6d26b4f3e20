//! Cylinder, region and enterprise codes, and the public QR look-up URL.
//!
//! A cylinder carries a 10-digit code (1D barcode) and a 16-digit code, the 6-digit
//! administrative region code followed by those 10 digits, inside a QR code of the form
//! `<public host>/Q?id=<16 digits>` (seed-solution.txt §5.1.1). The 16-digit code is the
//! cylinder's identity everywhere in this system.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Why a code did not parse. Each variant names what was expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodeError {
    #[error("{what} must be {expected} digits, got {got} characters")]
    Length { what: &'static str, expected: usize, got: usize },
    #[error("{what} may contain only digits 0-9, found {found:?} at position {position}")]
    NotDigit { what: &'static str, found: char, position: usize },
    #[error("region code {0} is not a valid administrative division (province part must be 11-82)")]
    Region(String),
    #[error("QR URL must contain `/Q?id=` followed by 16 digits")]
    QrUrl,
    #[error("a scanned code must be 10 or 16 digits or a QR URL, got {got} characters")]
    ScanLength { got: usize },
}

fn digits<const N: usize>(what: &'static str, s: &str) -> Result<[u8; N], CodeError> {
    let got = s.chars().count();
    if got != N {
        return Err(CodeError::Length { what, expected: N, got });
    }
    let mut out = [0u8; N];
    for (position, found) in s.chars().enumerate() {
        if !found.is_ascii_digit() {
            return Err(CodeError::NotDigit { what, found, position });
        }
        out[position] = found as u8;
    }
    Ok(out)
}

macro_rules! digit_code {
    ($(#[$doc:meta])* $name:ident, $n:literal, $what:literal) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name([u8; $n]);

        impl $name {
            /// The code as a string of ASCII digits.
            pub fn as_str(&self) -> &str {
                std::str::from_utf8(&self.0).expect("constructed from ASCII digits only")
            }

            /// The code as bytes, for storage keys.
            pub fn as_bytes(&self) -> &[u8; $n] {
                &self.0
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self.as_str())
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }

        impl TryFrom<&[u8]> for $name {
            type Error = CodeError;
            fn try_from(b: &[u8]) -> Result<Self, CodeError> {
                let s = std::str::from_utf8(b).map_err(|_| CodeError::Length {
                    what: $what,
                    expected: $n,
                    got: b.len(),
                })?;
                s.parse()
            }
        }
    };
}

digit_code!(
    /// The 10-digit cylinder code printed as a 1D barcode, e.g. `0110100001`.
    CylinderCode, 10, "cylinder code"
);
digit_code!(
    /// A 6-digit administrative region code (GB/T 2260), e.g. `370102` for 济南市历下区.
    RegionCode, 6, "region code"
);
digit_code!(
    /// The 16-digit cylinder code: region code + 10-digit cylinder code.
    FullCode, 16, "16-digit cylinder code"
);
digit_code!(
    /// A 10-digit enterprise code: region code + 4-digit sequence, e.g. `3701020001`.
    EnterpriseCode, 10, "enterprise code"
);

impl FromStr for CylinderCode {
    type Err = CodeError;
    fn from_str(s: &str) -> Result<Self, CodeError> {
        digits::<10>("cylinder code", s).map(Self)
    }
}

impl FromStr for RegionCode {
    type Err = CodeError;
    fn from_str(s: &str) -> Result<Self, CodeError> {
        let d = digits::<6>("region code", s)?;
        validate_region(&d[..6]).map(|()| Self(d))
    }
}

impl FromStr for FullCode {
    type Err = CodeError;
    fn from_str(s: &str) -> Result<Self, CodeError> {
        let d = digits::<16>("16-digit cylinder code", s)?;
        validate_region(&d[..6]).map(|()| Self(d))
    }
}

impl FromStr for EnterpriseCode {
    type Err = CodeError;
    fn from_str(s: &str) -> Result<Self, CodeError> {
        let d = digits::<10>("enterprise code", s)?;
        validate_region(&d[..6]).map(|()| Self(d))
    }
}

/// Province codes of GB/T 2260 run from 11 (北京) to 82 (澳门); 00 and 99 are not regions.
fn validate_region(d: &[u8]) -> Result<(), CodeError> {
    let province = (d[0] - b'0') * 10 + (d[1] - b'0');
    if (11..=82).contains(&province) { Ok(()) } else { Err(CodeError::Region(String::from_utf8_lossy(d).into_owned())) }
}

impl FullCode {
    /// Joins a region code and a 10-digit cylinder code.
    pub fn new(region: RegionCode, code: CylinderCode) -> Self {
        let mut d = [0u8; 16];
        d[..6].copy_from_slice(region.as_bytes());
        d[6..].copy_from_slice(code.as_bytes());
        Self(d)
    }

    pub fn region(&self) -> RegionCode {
        RegionCode(self.0[..6].try_into().expect("6 of 16 bytes"))
    }

    pub fn cylinder(&self) -> CylinderCode {
        CylinderCode(self.0[6..].try_into().expect("10 of 16 bytes"))
    }

    /// The public look-up URL carried in the QR code.
    pub fn qr_url(&self, public_host: &str) -> String {
        format!("{}/Q?id={}", public_host.trim_end_matches('/'), self.as_str())
    }

    /// Reads a 16-digit code out of a QR look-up URL.
    pub fn from_qr_url(url: &str) -> Result<Self, CodeError> {
        let (_, rest) = url.split_once("/Q?id=").ok_or(CodeError::QrUrl)?;
        let id: String = rest.chars().take_while(|c| *c != '&' && *c != '#').collect();
        let id = id.replace(' ', "");
        if id.len() != 16 {
            return Err(CodeError::QrUrl);
        }
        id.parse()
    }

    /// Reads what a scanner produced: a 16-digit code, a QR URL, or a 10-digit code
    /// completed with the station's region.
    pub fn from_scan(scan: &str, station_region: RegionCode) -> Result<Self, CodeError> {
        let scan = scan.trim();
        if scan.contains("/Q?id=") {
            return Self::from_qr_url(scan);
        }
        match scan.chars().count() {
            10 => Ok(Self::new(station_region, scan.parse()?)),
            16 => scan.parse(),
            got => Err(CodeError::ScanLength { got }),
        }
    }
}

impl EnterpriseCode {
    pub fn region(&self) -> RegionCode {
        RegionCode(self.0[..6].try_into().expect("6 of 10 bytes"))
    }
}

impl RegionCode {
    /// Whether `other` lies in this region. GB/T 2260 codes nest by trailing zero pairs:
    /// a province (`370000`) holds its cities (`3701xx`), a city (`370100`) its counties
    /// (`370102`); a county holds only itself.
    pub fn contains(&self, other: RegionCode) -> bool {
        let mut len = 6;
        while len > 2 && self.0[len - 2..len] == *b"00" {
            len -= 2;
        }
        self.0[..len] == other.0[..len]
    }
}

#[cfg(test)]
mod tests;
