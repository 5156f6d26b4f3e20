"""Writes the cylinder-archive import templates (CSV and XLSX) and the test fixtures with
bad rows. Run from this directory: python3 make_templates.py. Uses only the standard
library: an XLSX file is a zip of XML parts."""
import csv
import zipfile

HEADERS = ["气瓶编码", "设备品种", "充装介质", "出厂编号", "制造单位", "出厂日期", "制造标准", "公称工作压力(MPa)",
           "水容积(L)", "皮重(kg)", "额定充装量(kg)", "设计使用年限(年)", "上次检验日期", "下次检验日期", "产权单位",
           "产权性质", "客户", "标签号"]
NUMERIC = (7, 8, 9, 10, 11)

SAMPLE = [
    ["0110100001", "无缝钢瓶", "氧气", "131475088", "北京天海工业有限公司", "2021-03-01", "GB/T 5099.1-2017", "15", "40",
     "48", "", "", "2024-03-01", "2027-03-01", "3701020001", "自有", "", "0110100001"],
    ["0110200001", "无缝钢瓶", "氮气", "1178054", "北京天海工业有限公司", "2020-06", "GB/T 5099.1-2017", "15", "40", "48",
     "", "", "2023-06-01", "2028-06-01", "3701020001", "托管", "", ""],
    ["0101100001", "液化石油气钢瓶", "液化石油气", "753158", "济南钢瓶厂", "2023-05-01", "GB 5842-2006", "2.1", "35.5", "15",
     "", "8", "", "2027-05-01", "3701020001", "自有", "", "T-753158"],
]


def row(code, medium, serial, made, volume, variety="无缝钢瓶", tags="", prop=""):
    return [code, variety, medium, serial, "m", made, "", "15", volume, "48", "", "", "", "2027-03-01", "", prop, "", tags]


# Spreadsheet row numbers: the header is row 1.
BAD = [
    row("0110100101", "氧气", "A1", "2021-03-01", "40"),          # 2 good
    row("01101", "氧气", "A2", "2021-03-01", "40"),               # 3 bad code
    row("0110100103", "水", "A3", "2021-03-01", "40"),            # 4 unknown medium
    row("0110100104", "氧气", "A4", "2021-13-01", "40"),          # 5 bad date
    row("0110100105", "氧气", "A5", "2021-03-01", "0"),           # 6 zero volume
    row("0110100101", "氧气", "A6", "2021-03-01", "40"),          # 7 duplicate of row 2
    row("0110100107", "二氧化碳", "A7", "2022-04", "40", "焊接钢瓶", "X-7", "托管"),  # 8 good
]


def col(i):
    s = ""
    i += 1
    while i:
        i, r = divmod(i - 1, 26)
        s = chr(65 + r) + s
    return s


def esc(t):
    return t.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def typed(r):
    return [(float(v) if "." in v else int(v)) if i in NUMERIC and v != "" else v for i, v in enumerate(r)]


def sheet(rows):
    out = ['<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
           '<worksheet xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main"><sheetData>']
    for ri, r in enumerate(rows):
        out.append(f'<row r="{ri + 1}">')
        for ci, v in enumerate(r):
            if v == "":
                continue
            ref = f"{col(ci)}{ri + 1}"
            if isinstance(v, (int, float)):
                out.append(f'<c r="{ref}"><v>{v}</v></c>')
            else:
                out.append(f'<c r="{ref}" t="inlineStr"><is><t>{esc(v)}</t></is></c>')
        out.append("</row>")
    out.append("</sheetData></worksheet>")
    return "".join(out)


def write_xlsx(path, rows):
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("[Content_Types].xml",
                   '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">'
                   '<Default Extension="rels" ContentType="application/vnd.openxmlformats-package.relationships+xml"/>'
                   '<Default Extension="xml" ContentType="application/xml"/>'
                   '<Override PartName="/xl/workbook.xml" ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.sheet.main+xml"/>'
                   '<Override PartName="/xl/worksheets/sheet1.xml" ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.worksheet+xml"/></Types>')
        z.writestr("_rels/.rels",
                   '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">'
                   '<Relationship Id="rId1" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/officeDocument" Target="xl/workbook.xml"/></Relationships>')
        z.writestr("xl/workbook.xml",
                   '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n<workbook xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main" '
                   'xmlns:r="http://schemas.openxmlformats.org/officeDocument/2006/relationships"><sheets><sheet name="气瓶档案" sheetId="1" r:id="rId1"/></sheets></workbook>')
        z.writestr("xl/_rels/workbook.xml.rels",
                   '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">'
                   '<Relationship Id="rId1" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/worksheet" Target="worksheets/sheet1.xml"/></Relationships>')
        z.writestr("xl/worksheets/sheet1.xml", sheet(rows))


def write_csv(path, rows):
    with open(path, "w", encoding="utf-8-sig", newline="") as f:
        csv.writer(f).writerows(rows)


write_csv("cylinders-template.csv", [HEADERS] + SAMPLE)
write_xlsx("cylinders-template.xlsx", [HEADERS] + [typed(r) for r in SAMPLE])
write_csv("../src/import/fixture-bad-rows.csv", [HEADERS] + BAD)
write_xlsx("../src/import/fixture-bad-rows.xlsx", [HEADERS] + [typed(r) for r in BAD])
