"""The AWS Price List Query API (GetProducts, DescribeServices, GetAttributeValues).

moto has no Pricing API. The controller reads on-demand prices from it exactly as upstream
Karpenter does (filters on regionCode, operatingSystem, tenancy, preInstalledSw,
capacitystatus, marketoption), so this answers those calls in the real awsJson1.1 format:
each PriceList entry is a JSON *string* holding a product and its OnDemand terms, paged by
NextToken.

Prices: the shipped us-east-1 on-demand table, scaled by a fixed per-region factor (most
US regions price like us-east-1). Good enough to prove the code path; not a price source.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

REGION_FACTORS = {
    "us-east-1": 1.0,
    "us-east-2": 1.0,
    "us-west-2": 1.0,
    "us-west-1": 1.17,
    "eu-west-1": 1.11,
    "eu-central-1": 1.19,
    "ap-southeast-1": 1.25,
    "ap-northeast-1": 1.29,
}
REGION_NAMES = {
    "us-east-1": "US East (N. Virginia)",
    "us-east-2": "US East (Ohio)",
    "us-west-1": "US West (N. California)",
    "us-west-2": "US West (Oregon)",
    "eu-west-1": "EU (Ireland)",
    "eu-central-1": "EU (Frankfurt)",
    "ap-southeast-1": "Asia Pacific (Singapore)",
    "ap-northeast-1": "Asia Pacific (Tokyo)",
}


class PricingError(Exception):
    def __init__(self, error_type: str, message: str):
        super().__init__(message)
        self.error_type = error_type
        self.message = message


class Pricing:
    def __init__(self, prices_file: Path, instance_types_file: Path):
        self.base_prices: dict[str, float] = json.loads(prices_file.read_text())
        self.instance_types: dict[str, dict[str, Any]] = json.loads(instance_types_file.read_text())
        self._products: dict[str, list[dict[str, Any]]] = {}

    def products(self, region: str) -> list[dict[str, Any]]:
        """Every EC2 Linux shared-tenancy on-demand product of a region, built once."""
        if region not in self._products:
            factor = REGION_FACTORS.get(region, 1.1)
            location = REGION_NAMES.get(region, region)
            items = []
            for name in sorted(self.base_prices):
                price = round(self.base_prices[name] * factor, 6)
                info = self.instance_types.get(name, {})
                sku = hashlib.sha1(f"{region}/{name}".encode()).hexdigest()[:16].upper()
                attributes = {
                    "servicecode": "AmazonEC2",
                    "instanceType": name,
                    "instanceFamily": "Compute optimized" if name.startswith("c") else "General purpose",
                    "location": location,
                    "locationType": "AWS Region",
                    "regionCode": region,
                    "operatingSystem": "Linux",
                    "tenancy": "Shared",
                    "preInstalledSw": "NA",
                    "licenseModel": "No License required",
                    "capacitystatus": "Used",
                    "marketoption": "OnDemand",
                    "operation": "RunInstances",
                    "usagetype": f"BoxUsage:{name}",
                    "vcpu": str(info.get("vcpu") or ""),
                    "memory": f"{(info.get('memory_mib') or 0) / 1024:g} GiB",
                }
                offer = f"{sku}.JRTCKXETXF"
                items.append(
                    {
                        "product": {"productFamily": "Compute Instance", "attributes": attributes, "sku": sku},
                        "serviceCode": "AmazonEC2",
                        "terms": {
                            "OnDemand": {
                                offer: {
                                    "priceDimensions": {
                                        f"{offer}.6YS6EN2CT7": {
                                            "unit": "Hrs",
                                            "endRange": "Inf",
                                            "description": f"${price} per On Demand Linux {name} Instance Hour",
                                            "appliesTo": [],
                                            "rateCode": f"{offer}.6YS6EN2CT7",
                                            "beginRange": "0",
                                            "pricePerUnit": {"USD": f"{price:.10f}"},
                                        }
                                    },
                                    "sku": sku,
                                    "effectiveDate": "2026-07-01T00:00:00Z",
                                    "offerTermCode": "JRTCKXETXF",
                                    "termAttributes": {},
                                }
                            }
                        },
                        "version": "20260701000000",
                        "publicationDate": "2026-07-01T00:00:00Z",
                    }
                )
            self._products[region] = items
        return self._products[region]

    def handle(self, operation: str, body: dict[str, Any]) -> dict[str, Any]:
        if operation == "DescribeServices":
            return {
                "Services": [{"ServiceCode": "AmazonEC2", "AttributeNames": ["instanceType", "regionCode", "operatingSystem", "tenancy", "preInstalledSw", "capacitystatus", "marketoption"]}],
                "FormatVersion": "aws_v1",
            }
        if operation == "GetAttributeValues":
            if body.get("ServiceCode") != "AmazonEC2":
                raise PricingError("NotFoundException", "Service not found")
            name = body.get("AttributeName")
            values = sorted({p["product"]["attributes"].get(name) for p in self.products("us-east-1")} - {None})
            return {"AttributeValues": [{"Value": v} for v in values]}
        if operation != "GetProducts":
            raise PricingError("InvalidParameterException", f"Unsupported operation {operation}")
        if body.get("ServiceCode") != "AmazonEC2":
            raise PricingError("NotFoundException", f"Service {body.get('ServiceCode')!r} not found")
        filters = body.get("Filters") or []
        region = next((f["Value"] for f in filters if f.get("Field") == "regionCode"), None)
        location = next((f["Value"] for f in filters if f.get("Field") == "location"), None)
        if region is None and location is not None:
            region = next((r for r, n in REGION_NAMES.items() if n == location), None)
        candidates = self.products(region) if region else []
        for f in filters:
            if f.get("Type", "TERM_MATCH") != "TERM_MATCH":
                raise PricingError("InvalidParameterException", f"Unsupported filter type {f.get('Type')}")
            field, value = f.get("Field"), f.get("Value")
            if field in ("regionCode", "location", "ServiceCode", "serviceCode"):
                continue
            candidates = [p for p in candidates if p["product"]["attributes"].get(field) == value]
        max_results = int(body.get("MaxResults") or 100)
        if not 1 <= max_results <= 100:
            raise PricingError("InvalidParameterException", "MaxResults must be between 1 and 100")
        try:
            start = int(body.get("NextToken") or 0)
        except ValueError:
            raise PricingError("InvalidNextTokenException", "Invalid NextToken")
        page = candidates[start : start + max_results]
        result: dict[str, Any] = {"FormatVersion": "aws_v1", "PriceList": [json.dumps(p) for p in page]}
        if start + max_results < len(candidates):
            result["NextToken"] = str(start + max_results)
        return result
