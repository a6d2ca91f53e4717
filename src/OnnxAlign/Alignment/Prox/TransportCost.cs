namespace OnnxAlign.Alignment.Prox;

/// <summary>
/// The transport cost c(x, y) = ½ Σ wᵢ (xᵢ − yᵢ)² of the Wasserstein prox (DESIGN §3): unweighted (w = 1, the default)
/// or with per-coordinate weights w &gt; 0 (a large weight keeps that pixel close to the model's).
/// </summary>
public sealed class TransportCost
{
    private readonly double[]? _weights;

    /// <summary>c(x, y) = ½‖x − y‖².</summary>
    public static TransportCost Euclidean { get; } = new(null);

    /// <summary>A cost with weights <paramref name="weights"/> (one per coordinate, all finite and &gt; 0), or unweighted when null.</summary>
    public TransportCost(IReadOnlyList<float>? weights)
    {
        if (weights is null) return;
        _weights = new double[weights.Count];
        for (int i = 0; i < _weights.Length; i++)
        {
            float w = weights[i];
            if (!(w > 0) || !float.IsFinite(w))
                throw new ArgumentException($"cost weight {i} is {w}: weights must be finite and > 0 (a zero weight would let that coordinate move for free)");
            _weights[i] = w;
        }
    }

    /// <summary>True when weights were given.</summary>
    public bool IsWeighted => _weights is not null;

    /// <summary>Number of weights (0 when unweighted).</summary>
    public int Size => _weights?.Length ?? 0;

    /// <summary>wᵢ.</summary>
    public double Weight(int i) => _weights is null ? 1 : _weights[i];

    /// <summary>min wᵢ (the strong-concavity modulus of −c is λ·min w).</summary>
    public double MinWeight => _weights?.Min() ?? 1;

    /// <summary>c(x, y).</summary>
    public double Evaluate(ReadOnlySpan<float> x, ReadOnlySpan<double> y)
    {
        double sum = 0;
        for (int i = 0; i < y.Length; i++)
        {
            double d = y[i] - x[i];
            sum += Weight(i) * d * d;
        }
        return 0.5 * sum;
    }

    /// <summary>c(x, y) for float y.</summary>
    public double Evaluate(ReadOnlySpan<float> x, ReadOnlySpan<float> y)
    {
        double sum = 0;
        for (int i = 0; i < y.Length; i++)
        {
            double d = (double)y[i] - x[i];
            sum += Weight(i) * d * d;
        }
        return 0.5 * sum;
    }
}

/// <summary>The valid value range of every coordinate (pixels in [−1, 1] for image models); the prox solves the boxed
/// problem when the unconstrained optimum leaves it (DESIGN §3).</summary>
public readonly record struct ValueBox(double Lower, double Upper)
{
    /// <summary>Pixel range of image diffusion models.</summary>
    public static ValueBox Pixels { get; } = new(-1, 1);

    /// <summary>v clamped into the box.</summary>
    public double Clamp(double v) => Math.Clamp(v, Lower, Upper);

    /// <summary>True when every value lies in the box.</summary>
    public bool Contains(ReadOnlySpan<double> y)
    {
        foreach (double v in y) if (v < Lower || v > Upper) return false;
        return true;
    }
}
