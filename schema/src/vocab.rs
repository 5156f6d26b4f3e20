//! Closed vocabularies: media (充装介质), cylinder varieties (设备品种) and property kinds.
//!
//! Each value has a stable ASCII code (what is stored and sent) and the Chinese name the
//! seed document uses (what people read). Parsing accepts either.

use std::fmt;
use std::str::FromStr;

use autosurgeon::{Hydrate, HydrateError, Reconcile, Reconciler};
use serde::{Deserialize, Serialize};

/// A value that is not in a closed vocabulary.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {what} {value:?}")]
pub struct UnknownValue {
    pub what: &'static str,
    pub value: String,
}

macro_rules! vocabulary {
    ($(#[$doc:meta])* $name:ident, $what:literal { $($variant:ident = $code:literal, $zh:literal;)* }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        pub enum $name {
            $(#[serde(rename = $code)] $variant,)*
        }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant,)*];

            /// Stable ASCII code.
            pub fn code(self) -> &'static str {
                match self { $($name::$variant => $code,)* }
            }

            /// Chinese name as printed in the seed document.
            pub fn zh(self) -> &'static str {
                match self { $($name::$variant => $zh,)* }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.code())
            }
        }

        impl FromStr for $name {
            type Err = UnknownValue;
            fn from_str(s: &str) -> Result<Self, UnknownValue> {
                let s = s.trim();
                $name::ALL
                    .iter()
                    .copied()
                    .find(|v| v.code().eq_ignore_ascii_case(s) || v.zh() == s)
                    .ok_or_else(|| UnknownValue { what: $what, value: s.to_owned() })
            }
        }

        impl Hydrate for $name {
            fn hydrate_string(s: &str) -> Result<Self, HydrateError> {
                s.parse().map_err(|e: UnknownValue| HydrateError::unexpected($what, e.value))
            }
        }

        impl Reconcile for $name {
            type Key<'a> = autosurgeon::reconcile::NoKey;
            fn reconcile<R: Reconciler>(&self, reconciler: R) -> Result<(), R::Error> {
                self.code().reconcile(reconciler)
            }
        }
    };
}

vocabulary!(
    /// The gas a cylinder is filled with. Codes follow the medium-code idea of domain.md §1.5
    /// (UN number based) but spelled as words for readability.
    Medium, "medium" {
        Lpg = "lpg", "液化石油气";
        Oxygen = "oxygen", "氧气";
        MedicalOxygen = "medical-oxygen", "医用氧";
        Nitrogen = "nitrogen", "氮气";
        Argon = "argon", "氩气";
        CarbonDioxide = "carbon-dioxide", "二氧化碳";
        Acetylene = "acetylene", "溶解乙炔";
        Hydrogen = "hydrogen", "氢气";
        Ammonia = "ammonia", "液氨";
        Propane = "propane", "丙烷";
        Lng = "lng", "液化天然气";
    }
);

vocabulary!(
    /// The cylinder variety (设备品种), domain.md §1.5 variety codes 01-07.
    Variety, "variety" {
        SeamlessSteel = "seamless-steel", "无缝钢瓶";
        WeldedSteel = "welded-steel", "焊接钢瓶";
        LpgWeldedSteel = "lpg-welded-steel", "液化石油气钢瓶";
        AcetyleneCylinder = "acetylene", "溶解乙炔气瓶";
        AluminiumSeamless = "aluminium-seamless", "铝合金无缝气瓶";
        WoundComposite = "wound-composite", "缠绕气瓶";
        Cryogenic = "cryogenic", "焊接绝热气瓶";
    }
);

vocabulary!(
    /// Whose property a cylinder is (产权性质).
    PropertyKind, "property kind" {
        Own = "own", "自有";
        Entrusted = "entrusted", "托管";
        Customer = "customer", "客户自有";
    }
);

vocabulary!(
    /// Staff roles; each handheld operation names the roles allowed to perform it.
    Role, "role" {
        Manager = "manager", "站长";
        Filler = "filler", "充装工";
        Keeper = "keeper", "库管员";
        Driver = "driver", "配送员";
        Repairer = "repairer", "维修工";
        Inspector = "inspector", "检验员";
        Regulator = "regulator", "监管人员";
    }
);

impl Medium {
    /// Liquefied gases are filled by mass and checked against a filling ratio; compressed
    /// gases are filled by pressure (domain.md §1.6).
    pub fn is_liquefied(self) -> bool {
        matches!(self, Medium::Lpg | Medium::CarbonDioxide | Medium::Ammonia | Medium::Propane | Medium::Lng)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_and_chinese_names_both_parse() {
        assert_eq!("lpg".parse(), Ok(Medium::Lpg));
        assert_eq!("液化石油气".parse(), Ok(Medium::Lpg));
        assert_eq!("无缝钢瓶".parse(), Ok(Variety::SeamlessSteel));
        assert_eq!("水".parse::<Medium>(), Err(UnknownValue { what: "medium", value: "水".into() }));
        for m in Medium::ALL {
            assert_eq!(m.code().parse(), Ok(*m));
            assert_eq!(m.zh().parse(), Ok(*m));
        }
    }
}
