//! Tests of code parsing: each accepted form and each precise error.

use super::*;

fn check<T: FromStr<Err = CodeError> + fmt::Debug + fmt::Display>(input: &str, expect: Result<&str, CodeError>) {
    let got = input.parse::<T>().map(|c| c.to_string());
    assert_eq!(got, expect.map(str::to_owned), "input {input:?}");
}

#[test]
fn cylinder_codes() {
    check::<CylinderCode>("0110100001", Ok("0110100001"));
    check::<CylinderCode>("011010000", Err(CodeError::Length { what: "cylinder code", expected: 10, got: 9 }));
    check::<CylinderCode>("01101O0001", Err(CodeError::NotDigit { what: "cylinder code", found: 'O', position: 5 }));
    check::<CylinderCode>(
        "０１１０１０００01",
        Err(CodeError::NotDigit { what: "cylinder code", found: '０', position: 0 }),
    );
}

#[test]
fn full_codes_and_regions() {
    check::<FullCode>("1100000110100001", Ok("1100000110100001"));
    check::<FullCode>("0000000110100001", Err(CodeError::Region("000000".into())));
    check::<FullCode>("9900000110100001", Err(CodeError::Region("990000".into())));
    check::<EnterpriseCode>("3701020001", Ok("3701020001"));
    check::<EnterpriseCode>("370102001", Err(CodeError::Length { what: "enterprise code", expected: 10, got: 9 }));
    check::<RegionCode>("370102", Ok("370102"));
    let full: FullCode = "3701020110100001".parse().unwrap();
    assert_eq!(full.region().as_str(), "370102");
    assert_eq!(full.cylinder().as_str(), "0110100001");
    assert_eq!(FullCode::new(full.region(), full.cylinder()), full);
}

#[test]
fn qr_url_round_trip() {
    let full: FullCode = "1100000110100001".parse().unwrap();
    let url = full.qr_url("http://teshe.org.cn/");
    assert_eq!(url, "http://teshe.org.cn/Q?id=1100000110100001");
    assert_eq!(FullCode::from_qr_url(&url), Ok(full));
    // The seed document prints a space between region and code.
    assert_eq!(FullCode::from_qr_url("http://teshe.org.cn/Q?id=110000 0110100001"), Ok(full));
    assert_eq!(FullCode::from_qr_url("http://teshe.org.cn/?id=1100000110100001"), Err(CodeError::QrUrl));
    assert_eq!(FullCode::from_qr_url("http://x/Q?id=11000001101"), Err(CodeError::QrUrl));
}

#[test]
fn scans_complete_ten_digit_codes_with_the_station_region() {
    let region: RegionCode = "370102".parse().unwrap();
    let cases = [
        ("0110100001", Ok("3701020110100001")),
        (" 1100000110100001 ", Ok("1100000110100001")),
        ("http://teshe.org.cn/Q?id=1100000110100001", Ok("1100000110100001")),
        ("12345", Err(CodeError::ScanLength { got: 5 })),
    ];
    for (scan, expect) in cases {
        let got = FullCode::from_scan(scan, region).map(|c| c.to_string());
        assert_eq!(got, expect.map(str::to_owned), "scan {scan:?}");
    }
}

#[test]
fn regions_contain_the_regions_below_them() {
    let r = |s: &str| s.parse::<RegionCode>().unwrap();
    let cases = [
        ("370000", "370102", true),
        ("370000", "370000", true),
        ("370000", "410102", false),
        ("370100", "370102", true),
        ("370100", "370112", true),
        ("370100", "370202", false),
        ("370102", "370102", true),
        ("370102", "370103", false),
        ("370102", "370100", false),
    ];
    for (outer, inner, expect) in cases {
        assert_eq!(r(outer).contains(r(inner)), expect, "{outer} contains {inner}");
    }
}
